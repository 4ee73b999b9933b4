package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kmmkit/kmmkit/controllerruntime/watch"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Embedded describes an operator's own kind T whose objects embed a
// ModuleSpec, for SetupEmbedded. T is a pointer type (*api.NICDriver).
type Embedded[T client.Object] struct {
	// Identity names the kind and the label domain the operator owns
	// (identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}): its node
	// labels, worker Pods and builds are its own. Required, and not
	// KMM's.
	Identity identity.Domain
	// New returns an empty object of the kind: func() *api.NICDriver {
	// return &api.NICDriver{} }.
	New func() T
	// NewList returns an empty list of the kind: &api.NICDriverList{}.
	NewList func() client.ObjectList
	// Spec returns the ModuleSpec embedded in an object: d.Spec.Module, or
	// d.Spec.Module.ModuleSpec() for a v1beta1.EmbeddedModuleSpec (the
	// small schema without devicePlugin and dra).
	Spec func(T) v1beta1.ModuleSpec
	// Status returns a pointer to the ModuleStatus embedded in an object:
	// &d.Status.Module. The status is written through the status
	// subresource, which the CRD must have.
	Status func(T) *v1beta1.ModuleStatus
	// SpecPath is where Spec sits in the object, so that validation
	// errors name the operator's own field: field.NewPath("spec",
	// "module"). Nil means "spec".
	SpecPath *field.Path
	// PodNamespace returns, for a cluster-scoped kind, the namespace its
	// worker and build Pods run in and its secrets are read from.
	// Required for a cluster-scoped kind, refused for a namespaced one.
	PodNamespace func(T) string
	// Finalizer holds an object until its module is unloaded everywhere;
	// "" means "<domain>/<kind in lower case>-unload".
	Finalizer string
}

// SetupEmbedded adds to mgr a controller for kind T: each pass validates
// the embedded spec (v1beta1.ValidateSpec at SpecPath; an invalid one
// changes nothing in the cluster and is reported as Valid=False), adds
// the finalizer to a valid object, calls kmm.Reconciler.ReconcileSpec
// with the owner reference (worker Pods and builds are owned by the
// object, as their controller) and the event reference (events go to the
// object), writes the status when it changed, drops the finalizer once a
// deleted object is unloaded everywhere, and asks to be requeued when the
// pass waits for something. It watches T, the nodes (watch.NodeHandler)
// and the Pods of the identity (watch.PodHandler).
//
// mgr's scheme must know T and T's CRD must be installed: whether T is
// cluster-scoped is read from the API server. On top of this package's
// rules, the operator's role needs get, list, watch and patch on T's
// resource, patch on its status and update on its finalizers.
func SetupEmbedded[T client.Object](mgr ctrl.Manager, e Embedded[T], o Options) error {
	c, err := newEmbedded(mgr, e)
	if err != nil {
		return fmt.Errorf("operator: %w", err)
	}
	name := o.Name
	if name == "" {
		name = strings.ToLower(e.Identity.Kind)
	}
	p, err := o.build(mgr, e.Identity, name)
	if err != nil {
		return fmt.Errorf("operator: %s: %w", e.Identity, err)
	}
	c.kmm, c.clientset = p.kmm, p.clientset
	return ctrl.NewControllerManagedBy(mgr).Named(name).
		For(e.New()).
		Watches(&corev1.Node{}, watch.NodeHandler(watch.Objects(mgr.GetCache(), e.NewList, e.Spec), e.Identity),
			builder.WithPredicates(watch.NodePredicate())).
		Watches(&corev1.Pod{}, watch.PodHandler(e.Identity, c.clusterScoped)).
		Watches(&appsv1.DaemonSet{}, watch.PodHandler(e.Identity, c.clusterScoped)).
		WithOptions(controller.Options{MaxConcurrentReconciles: o.MaxConcurrentReconciles}).
		Complete(c)
}

type embedded[T client.Object] struct {
	e             Embedded[T]
	gvk           schema.GroupVersionKind
	clusterScoped bool
	finalizer     string
	specPath      *field.Path
	client        client.Client
	kmm           *kmm.Reconciler
	clientset     kubernetes.Interface
}

func newEmbedded[T client.Object](mgr ctrl.Manager, e Embedded[T]) (*embedded[T], error) {
	if err := e.Identity.Validate(); err != nil {
		return nil, err
	}
	if e.Identity.IsKMM() {
		return nil, errors.New("Embedded.Identity is KMM's: an operator's own kind needs a domain of its own, e.g. identity.Domain{Name: \"nic.acme.io\", Kind: \"NICDriver\"}")
	}
	if e.New == nil || e.NewList == nil || e.Spec == nil || e.Status == nil {
		return nil, fmt.Errorf("%s: Embedded needs New, NewList, Spec and Status", e.Identity)
	}
	obj := e.New()
	gvk, err := apiutil.GVKForObject(obj, mgr.GetScheme())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Identity, err)
	}
	if gvk.Kind != e.Identity.Kind {
		return nil, fmt.Errorf("%s: the object's kind is %s: Identity.Kind names the kind of the objects that own the Pods", e.Identity, gvk.Kind)
	}
	namespaced, err := apiutil.IsObjectNamespaced(obj, mgr.GetScheme(), mgr.GetRESTMapper())
	if err != nil {
		return nil, fmt.Errorf("%s: is %s installed? %w", e.Identity, gvk, err)
	}
	switch {
	case !namespaced && e.PodNamespace == nil:
		return nil, fmt.Errorf("%s is cluster-scoped: Embedded.PodNamespace must name the namespace of its worker and build Pods", gvk.Kind)
	case namespaced && e.PodNamespace != nil:
		return nil, fmt.Errorf("%s is namespaced: its Pods run in its own namespace, so Embedded.PodNamespace must be nil", gvk.Kind)
	}
	c := &embedded[T]{e: e, gvk: gvk, clusterScoped: !namespaced, finalizer: e.Finalizer, specPath: e.SpecPath, client: mgr.GetClient()}
	if c.finalizer == "" {
		c.finalizer = e.Identity.Name + "/" + strings.ToLower(e.Identity.Kind) + "-unload"
	}
	if c.specPath == nil {
		c.specPath = field.NewPath("spec")
	}
	return c, nil
}

// Reconcile implements reconcile.Reconciler.
func (c *embedded[T]) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	obj := c.e.New()
	if err := c.client.Get(ctx, req.NamespacedName, obj); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	what := c.gvk.Kind + " " + req.String()
	deleting := !obj.GetDeletionTimestamp().IsZero()
	held := controllerutil.ContainsFinalizer(obj, c.finalizer)
	if deleting && !held {
		return reconcile.Result{}, nil
	}
	spec := c.e.Spec(obj)
	// As kmm.Reconciler.Reconcile does for a Module: no finalizer while the
	// spec is invalid, since nothing is loaded for it that one would wait for.
	if !deleting && !held && len(v1beta1.ValidateSpec(&spec, c.specPath)) == 0 {
		if err := c.patchFinalizer(ctx, obj, controllerutil.AddFinalizer); err != nil {
			return reconcile.Result{}, fmt.Errorf("adding finalizer %s to %s: %w", c.finalizer, what, err)
		}
		held = true
	}
	kobj := kmm.Object{
		Namespace: obj.GetNamespace(), Name: obj.GetName(), Spec: spec, Status: *c.e.Status(obj),
		Generation: obj.GetGeneration(), Deleting: deleting, SpecPath: c.specPath,
		Owner: &metav1.OwnerReference{APIVersion: c.gvk.GroupVersion().String(), Kind: c.gvk.Kind, Name: obj.GetName(),
			UID: obj.GetUID(), Controller: ptr.To(true)},
		Ref: &corev1.ObjectReference{APIVersion: c.gvk.GroupVersion().String(), Kind: c.gvk.Kind,
			Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID()},
	}
	podNS := obj.GetNamespace()
	if c.clusterScoped {
		kobj.PodNamespace = c.e.PodNamespace(obj)
		podNS = kobj.PodNamespace
	}
	if deleting && podNS != "" {
		ns, err := c.clientset.CoreV1().Namespaces().Get(ctx, podNS, metav1.GetOptions{})
		kobj.NamespaceTerminating = err == nil && (ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating)
	}
	res, err := c.kmm.ReconcileSpec(ctx, kobj)
	result := reconcile.Result{RequeueAfter: res.RequeueAfter}
	if !equality.Semantic.DeepEqual(*c.e.Status(obj), res.Status) {
		base := obj.DeepCopyObject().(T)
		*c.e.Status(obj) = res.Status
		if perr := c.client.Status().Patch(ctx, obj, client.MergeFrom(base)); perr != nil {
			return result, errors.Join(err, fmt.Errorf("writing the status of %s: %w", what, perr))
		}
	}
	if res.Done && held {
		if perr := c.patchFinalizer(ctx, obj, controllerutil.RemoveFinalizer); client.IgnoreNotFound(perr) != nil {
			return result, errors.Join(err, fmt.Errorf("removing finalizer %s from %s: %w", c.finalizer, what, perr))
		}
	}
	return result, err
}

// patchFinalizer adds or removes the finalizer with a patch that fails on
// a stale object, so another controller's finalizer is never lost.
func (c *embedded[T]) patchFinalizer(ctx context.Context, obj T, change func(client.Object, string) bool) error {
	base := obj.DeepCopyObject().(T)
	if !change(obj, c.finalizer) {
		return nil
	}
	return c.client.Patch(ctx, obj, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}
