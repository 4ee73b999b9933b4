// Package watch tells a controller-runtime controller which events
// concern which kmmkit owner (a KMM Module, or an operator's resource
// that embeds a ModuleSpec), so that a node change reconciles exactly the
// owners it affects and kmmkit's own writes reconcile nothing.
//
// What to watch, and why:
//
//   - Nodes: NodeHandler, with NodePredicate. A node's kernel decides its
//     image, its boot ID says the module must be loaded again after a
//     reboot, its labels decide which selectors match it, its taints
//     which owners may run workers there; a new node may need the module
//     and a deleted one has workers to clean up. NodeHandler enqueues an
//     owner only when the change is one of those for that owner: its
//     selector's answer changed, or the node is selected (or has the
//     owner's module) and its kernel, boot ID or untolerated taints
//     changed. kmmkit's own writes — the .ready and .version.ready labels
//     and the loaded annotation of every owner — therefore enqueue
//     nobody, unless a selector names such a label (load B where A is
//     ready), which is exactly when they matter. For an owner with a
//     version (KMM's ordered upgrade), its version-module (M),
//     version-worker-pod (W) and version-schedule-pod (S) labels matter
//     on every node, and its .ready label where M is set: the
//     Reconciler steps W and S one change a pass, and each change, or
//     the unload a step waits for, moves it on.
//   - Pods: PodHandler maps worker, build and device-plugin Pods back to
//     their owner by the identity's owner-name label (and the owner
//     reference when the name was too long for a label value): a worker
//     that finished, failed or cannot pull its image moves the owner on,
//     a device-plugin Pod that leaves a node whose ordered-upgrade step
//     waits for it moves it on too, and a device plugin Pod that turns
//     Ready, not Ready or goes moves the owner's device-plugin-ready node
//     label (kmmkit has no node labeler controller of its own: the
//     owner's pass keeps it).
//   - DaemonSets: the same PodHandler maps the device plugin DaemonSets
//     of spec.devicePlugin to their owner: their status gives
//     status.devicePlugin's counts, and tells when an old version's
//     DaemonSet schedules nothing and may go.
//   - The owner kind itself (For in the builder), with no predicate: a
//     status write by kmmkit costs one pass that writes nothing.
//
// Nothing else needs a watch: images, builds and signing are checked on
// the owner's pass, and a pass that waits for them asks to be requeued.
package watch

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Owner is one kmmkit owner as the handlers see it: its key (Namespace
// "" for a cluster-scoped owner) and its ModuleSpec.
type Owner struct {
	Key  types.NamespacedName
	Spec *v1beta1.ModuleSpec
}

// OwnerLister lists the owners, from the manager's cache.
type OwnerLister func(ctx context.Context) ([]Owner, error)

// Modules lists KMM's Modules from r (the manager's cache).
func Modules(r client.Reader) OwnerLister {
	return func(ctx context.Context) ([]Owner, error) {
		var list v1beta1.ModuleList
		if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing modules: %w", err)
		}
		out := make([]Owner, len(list.Items))
		for i := range list.Items {
			m := &list.Items[i]
			out[i] = Owner{Key: types.NamespacedName{Namespace: m.Namespace, Name: m.Name}, Spec: &m.Spec}
		}
		return out, nil
	}
}

// Objects lists the objects of an operator's own kind from r (the
// manager's cache): newList returns an empty list of the kind (say
// &api.NICDriverList{}), spec the ModuleSpec embedded in one object.
func Objects[T client.Object](r client.Reader, newList func() client.ObjectList, spec func(T) v1beta1.ModuleSpec) OwnerLister {
	return func(ctx context.Context) ([]Owner, error) {
		list := newList()
		if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing %T: %w", list, err)
		}
		var out []Owner
		err := meta.EachListItem(list, func(o runtime.Object) error {
			obj, ok := o.(T)
			if !ok {
				return fmt.Errorf("%T holds a %T, not a %T", list, o, *new(T))
			}
			s := spec(obj)
			out = append(out, Owner{Key: client.ObjectKeyFromObject(obj), Spec: &s})
			return nil
		})
		return out, err
	}
}
