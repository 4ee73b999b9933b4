package watch

import (
	"context"
	"maps"
	"slices"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// NodePredicate passes the node events that can matter to some owner:
// creations, deletions, and updates of the kernel version, the boot ID,
// the labels or the taints. Status heartbeats, conditions, capacity and
// images, and every annotation (kmmkit's loaded annotations among them)
// do not pass.
//
// With domains, an update whose only label changes are the .ready and
// .version.ready labels of those domains' owners does not pass either.
// Give domains only when no selector names such a label (a Module that
// loads where another one is ready needs those writes), and no owner has
// a version (an ordered-upgrade step that waits for the .ready label to
// go would then wait for its requeue); NodeHandler
// already enqueues nobody for them when no selector sees them, so the
// setup helpers of package operator give none.
func NodePredicate(ignore ...identity.Domain) predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			old, okOld := e.ObjectOld.(*corev1.Node)
			cur, okNew := e.ObjectNew.(*corev1.Node)
			if !okOld || !okNew {
				return true
			}
			return nodeInfoChanged(old, cur) || !sameTaints(old.Spec.Taints, cur.Spec.Taints) ||
				labelsChanged(old.Labels, cur.Labels, ignore)
		},
	}
}

// labelsChanged reports whether a label other than the status labels of
// ignore was added, removed or changed.
func labelsChanged(old, cur map[string]string, ignore []identity.Domain) bool {
	own := func(key string) bool {
		return slices.ContainsFunc(ignore, func(d identity.Domain) bool { return d.IsStatusLabel(key) })
	}
	for k, v := range cur {
		if was, ok := old[k]; (!ok || was != v) && !own(k) {
			return true
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok && !own(k) {
			return true
		}
	}
	return false
}

func nodeInfoChanged(old, cur *corev1.Node) bool {
	return old.Status.NodeInfo.KernelVersion != cur.Status.NodeInfo.KernelVersion ||
		old.Status.NodeInfo.BootID != cur.Status.NodeInfo.BootID
}

// NodeHandler enqueues the owners that a node event affects (Affects),
// listing them with owners; d is their identity.
func NodeHandler(owners OwnerLister, d identity.Domain) handler.EventHandler {
	return nodeHandler{owners: owners, d: d}
}

type nodeHandler struct {
	owners OwnerLister
	d      identity.Domain
}

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

func (h nodeHandler) Create(ctx context.Context, e event.CreateEvent, q queue) {
	h.enqueue(ctx, q, nil, asNode(e.Object))
}

func (h nodeHandler) Update(ctx context.Context, e event.UpdateEvent, q queue) {
	h.enqueue(ctx, q, asNode(e.ObjectOld), asNode(e.ObjectNew))
}

func (h nodeHandler) Delete(ctx context.Context, e event.DeleteEvent, q queue) {
	h.enqueue(ctx, q, asNode(e.Object), nil)
}

func (h nodeHandler) Generic(ctx context.Context, e event.GenericEvent, q queue) {
	h.enqueue(ctx, q, nil, asNode(e.Object))
}

func asNode(o client.Object) *corev1.Node {
	n, _ := o.(*corev1.Node)
	return n
}

func (h nodeHandler) enqueue(ctx context.Context, q queue, old, cur *corev1.Node) {
	if old == nil && cur == nil {
		return
	}
	owners, err := h.owners(ctx)
	if err != nil {
		name := ""
		if cur != nil {
			name = cur.Name
		} else {
			name = old.Name
		}
		logr.FromContextOrDiscard(ctx).Error(err, "cannot map a node event to its owners", "node", name)
		return
	}
	for _, o := range owners {
		if Affects(h.d, o, old, cur) {
			q.Add(reconcile.Request{NamespacedName: o.Key})
		}
	}
}

// Affects reports whether a node change matters to owner o of identity
// d: old is nil for a new node, cur nil for a deleted one. It does when
// the owner's selector matches one of old and cur but not the other; or,
// when the node is selected or carries the owner's module (its loaded
// annotation or status labels), when the node appears or goes, or its
// kernel version, boot ID or the taints the owner does not tolerate
// (kmm.Untolerated) change. For an owner with a version (KMM's ordered
// upgrade), a change of its version-module, version-worker-pod or
// version-schedule-pod label matters on any node, and so does its .ready
// label on a node with its version-module label: a step that waits for
// the module to be unloaded goes on when it goes.
func Affects(d identity.Domain, o Owner, old, cur *corev1.Node) bool {
	spec := o.Spec
	if spec == nil {
		return false
	}
	sel := labels.SelectorFromSet(spec.Selector)
	was := old != nil && sel.Matches(labels.Set(old.Labels))
	is := cur != nil && sel.Matches(labels.Set(cur.Labels))
	if was != is {
		return true
	}
	id := d.Owner(o.Key.Namespace, o.Key.Name)
	if versionChanged(id, spec, old, cur) {
		return true
	}
	if !is && !carries(id, old) && !carries(id, cur) {
		return false
	}
	if old == nil || cur == nil {
		return true
	}
	return nodeInfoChanged(old, cur) || !sameTaints(kmm.Untolerated(spec, old), kmm.Untolerated(spec, cur))
}

// versionChanged reports, for an owner with a version (ordered upgrade),
// whether its M, W or S label changed (on any node: the labels are
// stepped wherever they are), or its .ready label changed on a node that
// has its M label (adding W waits for .ready to go).
func versionChanged(o identity.Owner, spec *v1beta1.ModuleSpec, old, cur *corev1.Node) bool {
	if spec.ModuleLoader == nil || spec.ModuleLoader.Container.Version == "" {
		return false
	}
	label := func(n *corev1.Node, key string) (string, bool) {
		if n == nil {
			return "", false
		}
		v, ok := n.Labels[key]
		return v, ok
	}
	for _, key := range []string{o.VersionModuleLabel(), o.VersionWorkerPodLabel(), o.VersionSchedulePodLabel()} {
		a, _ := label(old, key)
		b, _ := label(cur, key)
		if a != b {
			return true
		}
	}
	if m, _ := label(cur, o.VersionModuleLabel()); m == "" || old == nil {
		return false
	}
	_, was := label(old, o.ReadyLabel())
	_, is := label(cur, o.ReadyLabel())
	return was != is
}

// carries reports whether n has o's module, as far as kmmkit recorded it.
func carries(o identity.Owner, n *corev1.Node) bool {
	if n == nil {
		return false
	}
	_, obs := n.Annotations[o.ObservedAnnotation()]
	_, ready := n.Labels[o.ReadyLabel()]
	_, version := n.Labels[o.VersionReadyLabel()]
	return obs || ready || version
}

// sameTaints compares taints as sets of key, value and effect (the time
// a NoExecute taint was added does not matter).
func sameTaints(a, b []corev1.Taint) bool {
	set := func(ts []corev1.Taint) map[corev1.Taint]bool {
		m := make(map[corev1.Taint]bool, len(ts))
		for _, t := range ts {
			m[corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect}] = true
		}
		return m
	}
	return maps.Equal(set(a), set(b))
}
