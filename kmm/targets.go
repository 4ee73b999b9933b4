package kmm

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/upgrade"
)

// targets is which nodes a Module is for.
type targets struct {
	// selected holds the schedulable nodes that match the selector, by
	// name: every one is desired (KMM's nodesMatchingSelectorNumber is
	// their number).
	selected []*corev1.Node
	// byKernel groups the nodes to load on by their (trimmed) kernel.
	byKernel map[string][]*corev1.Node
	// keep holds nodes that match the selector but are not schedulable
	// for the Module (cordoned, tainted): what is loaded there stays, and
	// nothing new starts. KMM unloads them (its §11.12).
	keep map[string]bool
	// noKernel lists matching nodes that report no kernel version.
	noKernel []string
}

// target picks the nodes of a Module: those that match its selector and
// whose NoSchedule and NoExecute taints its tolerations (plus KMM's
// internal pressure tolerations) all tolerate, as KMM does. A matching
// node that is not schedulable keeps what it has unless unloadOnTaint.
func (r *Reconciler) target(obj Object, nodes []*corev1.Node) targets {
	t := targets{byKernel: map[string][]*corev1.Node{}, keep: map[string]bool{}}
	sel := labels.SelectorFromSet(obj.Spec.Selector)
	tolerations := append(append([]corev1.Toleration{}, obj.Spec.Tolerations...), kernelmap.InternalTolerations()...)
	owner := r.identity.Owner(obj.Namespace, obj.Name)
	for _, n := range nodes {
		if !sel.Matches(labels.Set(n.Labels)) {
			continue
		}
		tol := tolerations
		if r.rolling != nil && rollingCandidate(owner, n) {
			// A cordon (the upgrade's own, or one the node had before)
			// does not untarget a node with the module: it is upgraded.
			tol = append(append([]corev1.Toleration{}, tolerations...), corev1.Toleration{Key: corev1.TaintNodeUnschedulable,
				Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
		}
		if !schedulable(n, tol) {
			if !r.unloadOnTaint {
				t.keep[n.Name] = true
			}
			continue
		}
		t.selected = append(t.selected, n)
		k := kernelmap.TrimKernel(n.Status.NodeInfo.KernelVersion)
		if k == "" {
			t.noKernel = append(t.noKernel, n.Name)
			continue
		}
		t.byKernel[k] = append(t.byKernel[k], n)
	}
	sort.Strings(t.noKernel)
	sort.Slice(t.selected, func(i, j int) bool { return t.selected[i].Name < t.selected[j].Name })
	return t
}

// kernels returns the kernels in order.
func (t targets) kernels() []string {
	out := make([]string, 0, len(t.byKernel))
	for k := range t.byKernel {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Untolerated returns the NoSchedule and NoExecute taints of node that the
// spec's tolerations, together with KMM's internal pressure tolerations, do
// not tolerate. A node that the selector matches is targeted only while
// there is none (otherwise it keeps what it has, see WithUnloadOnTaint), so
// a watcher that compares the result before and after a node change knows
// whether the change matters to the spec.
func Untolerated(spec *v1beta1.ModuleSpec, node *corev1.Node) []corev1.Taint {
	tolerations := append(append([]corev1.Toleration{}, spec.Tolerations...), kernelmap.InternalTolerations()...)
	var out []corev1.Taint
	for i := range node.Spec.Taints {
		if !tolerated(&node.Spec.Taints[i], tolerations) {
			out = append(out, node.Spec.Taints[i])
		}
	}
	return out
}

// schedulable reports whether every NoSchedule and NoExecute taint of n
// is tolerated.
func schedulable(n *corev1.Node, tolerations []corev1.Toleration) bool {
	for i := range n.Spec.Taints {
		if !tolerated(&n.Spec.Taints[i], tolerations) {
			return false
		}
	}
	return true
}

// tolerated reports whether taint leaves a node schedulable for
// tolerations: its effect is neither NoSchedule nor NoExecute, or one of
// them tolerates it.
func tolerated(taint *corev1.Taint, tolerations []corev1.Toleration) bool {
	if taint.Effect != corev1.TaintEffectNoSchedule && taint.Effect != corev1.TaintEffectNoExecute {
		return true
	}
	for j := range tolerations {
		if tolerations[j].ToleratesTaint(taint) {
			return true
		}
	}
	return false
}

// rollingCandidate reports whether a rolling upgrade of owner keeps n
// targeted while it is cordoned: it has the owner's module loaded (so
// it can be upgraded), or it is in an upgrade, or failed one (between
// the unload and the load nothing is loaded, and the upgrade goes on).
func rollingCandidate(owner identity.Owner, n *corev1.Node) bool {
	if _, loaded := n.Annotations[owner.ObservedAnnotation()]; loaded {
		return true
	}
	s := upgrade.State(n.Labels[owner.UpgradeStateLabel()])
	return s.InProgress() || s == upgrade.Failed
}
