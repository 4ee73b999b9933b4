package kmmtest

import (
	"context"
	"errors"
	"fmt"

	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Owner tells the harness how to handle an embedding operator's own
// resource, of type T (*NICDriver, say), whose spec embeds a ModuleSpec
// or an EmbeddedModuleSpec. The harness does with it what the operator's
// controller does: read the object, reconcile the kmm.Object it stands
// for, write the status back when it changed, and release the object
// when its deletion is done.
type Owner[T any] struct {
	// Identity names the owner's labels, annotations and Pods, as
	// kmm.WithIdentity does for the operator's Reconciler
	// (identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}, say). The
	// zero Domain keeps the harness's (KMM's, unless New was given
	// kmm.WithIdentity).
	Identity identity.Domain
	// Get reads the object; the harness reads it afresh before every
	// pass, as a controller does.
	Get func(ctx context.Context, namespace, name string) (T, error)
	// Object returns what the Reconciler works on: namespace and name, the
	// spec (EmbeddedModuleSpec.ModuleSpec(), say), the status written
	// last, the generation, whether it is being deleted, the owner and
	// event references, and SpecPath, where the spec sits in T (for the
	// field paths of validation errors).
	Object func(obj T) kmm.Object
	// SetStatus writes a pass's status into the object and stores it. It
	// is called only when the status changed, also when the pass failed.
	SetStatus func(ctx context.Context, obj T, status v1beta1.ModuleStatus) error
	// Release, if set, is called once a pass on a deleting object reports
	// Done: drop the finalizer, remove the object.
	Release func(ctx context.Context, obj T) error
}

// Owners reconciles the owners of one kind on a Harness's fakes, with a
// Reconciler of the owner's identity that Harness.Restart replaces too.
type Owners[T any] struct {
	h          *Harness
	owner      Owner[T]
	reconciler *kmm.Reconciler
}

// NewOwners returns the Owners of kind o on h. Get, Object and SetStatus
// are required; an identity that kmm.WithIdentity refuses is an error.
func NewOwners[T any](h *Harness, o Owner[T]) (*Owners[T], error) {
	if o.Get == nil || o.Object == nil || o.SetStatus == nil {
		return nil, errors.New("kmmtest: an Owner needs Get, Object and SetStatus")
	}
	s := &Owners[T]{h: h, owner: o}
	rebuild := func() error {
		var extra []kmm.Option
		if o.Identity != (identity.Domain{}) {
			extra = append(extra, kmm.WithIdentity(o.Identity))
		}
		r, err := h.newReconciler(extra...)
		if err != nil {
			return fmt.Errorf("kmmtest: owner kind %q: %w", o.Identity.Kind, err)
		}
		s.reconciler = r
		return nil
	}
	if err := rebuild(); err != nil {
		return nil, err
	}
	h.owners = append(h.owners, rebuild)
	return s, nil
}

// Reconciler returns the current Reconciler of these owners: the one the
// harness's last Restart made.
func (s *Owners[T]) Reconciler() *kmm.Reconciler { return s.reconciler }

// Reconcile runs one ReconcileSpec pass on the object namespace/name,
// writes its status when it changed, and releases the object when its
// deletion is done. It returns the pass's result and error (joined with
// a failure to write or release).
func (s *Owners[T]) Reconcile(ctx context.Context, namespace, name string) (kmm.Result, error) {
	obj, err := s.owner.Get(ctx, namespace, name)
	if err != nil {
		return kmm.Result{}, err
	}
	in := s.owner.Object(obj)
	res, err := s.reconciler.ReconcileSpec(ctx, in)
	if !apiequality.Semantic.DeepEqual(in.Status, res.Status) {
		if serr := s.owner.SetStatus(ctx, obj, res.Status); serr != nil {
			return res, errors.Join(err, fmt.Errorf("kmmtest: writing the status of %s: %w", key(namespace, name), serr))
		}
	}
	if err == nil && in.Deleting && res.Done && s.owner.Release != nil {
		if rerr := s.owner.Release(ctx, obj); rerr != nil {
			return res, fmt.Errorf("kmmtest: releasing %s: %w", key(namespace, name), rerr)
		}
	}
	return res, err
}

// ReconcileUntilStable reconciles the object until a pass asks for no
// quick requeue (a requeue of a minute or more counts as stable) or its
// deletion is done, at most max passes.
func (s *Owners[T]) ReconcileUntilStable(ctx context.Context, namespace, name string, max int) (kmm.Result, error) {
	what := s.owner.Identity.Kind
	if what == "" {
		what = "owner"
	}
	return settle(max, what+" "+key(namespace, name), func() (kmm.Result, error) {
		return s.Reconcile(ctx, namespace, name)
	})
}

// key is namespace/name, or name for a cluster-scoped owner.
func key(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
