package watch

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kmmkit/kmmkit/identity"
)

// PodHandler enqueues the owner of every Pod that carries the owner-name
// label of d (PodOwner): kmmkit's worker and build Pods, and KMM's
// device-plugin Pods. clusterScoped says that d's kind is cluster-scoped:
// its Pods run in another namespace, and the request names no namespace.
func PodHandler(d identity.Domain, clusterScoped bool) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, pod client.Object) []reconcile.Request {
		key, ok := PodOwner(d, clusterScoped, pod)
		if !ok {
			return nil
		}
		return []reconcile.Request{{NamespacedName: key}}
	})
}

// PodOwner returns the owner of identity d that pod runs for, by d's
// owner-name label: the owner reference of d's kind whose name gives that
// label value, else the label value itself (the owner's name whenever it
// fits a label value, 63 characters). A Pod without the label has no
// owner of d. The owner's namespace is the Pod's, or "" when
// clusterScoped.
func PodOwner(d identity.Domain, clusterScoped bool, pod client.Object) (types.NamespacedName, bool) {
	o := d.Owner("", "x")
	v, ok := pod.GetLabels()[o.NameLabel()]
	if !ok || v == "" {
		return types.NamespacedName{}, false
	}
	kind := d.Kind
	if d.IsKMM() {
		kind = identity.KMMKind
	}
	key := types.NamespacedName{Name: v}
	for _, ref := range pod.GetOwnerReferences() {
		if ref.Kind == kind && identity.LabelValue(ref.Name) == v {
			key.Name = ref.Name
			break
		}
	}
	if !clusterScoped {
		key.Namespace = pod.GetNamespace()
	}
	return key, true
}
