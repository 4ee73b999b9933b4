package kmm

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
)

// KMM's ordered upgrade (spec.moduleLoader.container.version). Three node
// labels per owner drive it: M, the version-module label the
// administrator sets (identity.Owner.VersionModuleLabel); W, the
// version-worker-pod label that says which version the loader may load
// (VersionWorkerPodLabel); S, the version-schedule-pod label that says
// which version's device plugin may run (VersionSchedulePodLabel). Each
// pass moves W and S one step towards M on every node, following KMM's
// action table (node_label_module_version_reconciler.go and
// module_version_label_action_table.go), and the loader follows W as
// KMM's prepareNodeSchedulingData does.

// labelState is how W or S stands against M, as KMM defines it.
type labelState uint8

const (
	// labelMissing: the label is absent or empty.
	labelMissing labelState = iota
	// labelPresent: it has M's value; or M is missing and it is not.
	labelPresent
	// labelDifferent: it and M are both set, to different values.
	labelDifferent
)

func (s labelState) String() string {
	return [...]string{"missing", "present", "different"}[s]
}

// versionState is the state of M, W and S on a node.
type versionState struct{ m, w, s labelState }

func (v versionState) String() string {
	return fmt.Sprintf("M %s, W %s, S %s", v.m, v.w, v.s)
}

// versionStep is the one label change a pass may make on a node.
type versionStep uint8

const (
	stepNone versionStep = iota
	// stepAddWorker sets W to M's value; guarded by G2.
	stepAddWorker
	// stepAddSchedule sets S to M's value.
	stepAddSchedule
	// stepDeleteWorker removes W; guarded by G1.
	stepDeleteWorker
	// stepDeleteSchedule removes S.
	stepDeleteSchedule
)

func (s versionStep) String() string {
	return [...]string{"none", "add W", "add S", "delete W", "delete S"}[s]
}

// kmmVersionTable is KMM's action table, row for row. The five states
// it leaves out are reachable only by hand (or by a Module created again
// over old labels); see versionAction.
var kmmVersionTable = map[versionState]versionStep{
	{labelMissing, labelMissing, labelMissing}:     stepNone,
	{labelMissing, labelPresent, labelPresent}:     stepDeleteSchedule,
	{labelMissing, labelPresent, labelMissing}:     stepDeleteWorker,
	{labelPresent, labelMissing, labelMissing}:     stepAddWorker,
	{labelPresent, labelPresent, labelMissing}:     stepAddSchedule,
	{labelPresent, labelPresent, labelPresent}:     stepNone,
	{labelPresent, labelDifferent, labelDifferent}: stepDeleteSchedule,
	{labelPresent, labelDifferent, labelMissing}:   stepDeleteWorker,
}

// stateOf classifies the values of M, W and S ("" = absent) as KMM does.
func stateOf(m, w, s string) versionState {
	of := func(v string) labelState {
		switch {
		case v == "":
			return labelMissing
		case m != "" && v != m:
			return labelDifferent
		}
		return labelPresent
	}
	st := versionState{m: labelPresent, w: of(w), s: of(s)}
	if m == "" {
		st.m = labelMissing
	}
	return st
}

// kmmVersionAction is what KMM does for the values of M, W and S: the
// table's step, and whether the state is in the table (KMM does nothing
// for one that is not).
func kmmVersionAction(m, w, s string) (versionStep, bool) {
	step, ok := kmmVersionTable[stateOf(m, w, s)]
	return step, ok
}

// versionAction is the step a pass takes: KMM's, except in the five
// states KMM's table leaves out, where KMM stays stuck until someone edits
// the labels by hand. Each of them has S set (M missing, W missing, S
// set; or M set and W missing or on another version, or S on another
// version than W), and removing S is what KMM's own rows do first in the
// neighbouring states: it is never guarded (S only lets a device plugin
// be scheduled, and that also needs the ready label), it undoes nothing
// the loader did, and every such state then lands on a row of the table.
// The second result says whether the state is not in KMM's table.
func versionAction(m, w, s string) (versionStep, bool) {
	if step, ok := kmmVersionAction(m, w, s); ok {
		return step, false
	}
	return stepDeleteSchedule, true
}

// versionGuard is what a step waits for.
type versionGuard uint8

const (
	guardNone versionGuard = iota
	// guardDevicePlugin (KMM's G1, before deleting W): a device-plugin
	// or DRA Pod of the owner is on the node, in any phase.
	guardDevicePlugin
	// guardLoaded (KMM's G2, before adding W): the owner's ready label is
	// on the node, so the old version is still loaded; or, since
	// kmmkit's loader drops .ready as soon as an unload starts, its
	// record of what is loaded (the owner's loaded annotation) is.
	guardLoaded
)

// guarded reports what step must wait for on node n; hasPluginPod says
// whether a device-plugin or DRA Pod of the owner is on it, and is asked
// only before deleting W.
func guarded(step versionStep, o identity.Owner, n *corev1.Node, hasPluginPod func() bool) versionGuard {
	switch step {
	case stepDeleteWorker:
		if hasPluginPod() {
			return guardDevicePlugin
		}
	case stepAddWorker:
		_, ready := n.Labels[o.ReadyLabel()]
		_, recorded := n.Annotations[o.ObservedAnnotation()]
		if ready || recorded {
			return guardLoaded
		}
	}
	return guardNone
}

// loadDecision is what the loader does for a versioned owner on a node,
// from W, as KMM's prepareNodeSchedulingData decides.
type loadDecision uint8

const (
	// loadNotDesired: W is absent; the module is unloaded (or nothing
	// loaded).
	loadNotDesired loadDecision = iota
	// loadCurrent: W is the spec's version; load the current image.
	loadCurrent
	// loadKeep: W names another version; what is loaded stays.
	loadKeep
)

// versionLoad decides from W and the spec's version (not "").
func versionLoad(w, version string) loadDecision {
	switch {
	case w == "":
		return loadNotDesired
	case w == version:
		return loadCurrent
	}
	return loadKeep
}

// Event reasons of the label steps, on the owner.
const (
	eventVersionLabelAdded   = "VersionLabelAdded"
	eventVersionLabelRemoved = "VersionLabelRemoved"
)

// Requeue delays of the ordered upgrade: after a step, for the next one
// (a watcher that lets the owner's M, W and S label changes through,
// watch.NodeHandler, is faster); while a step waits for a guard, in
// case no Pod or node event ends the wait.
const (
	versionStepRequeue = time.Second
	versionWaitRequeue = 10 * time.Second
)

// versionNode is where one node stands in an ordered upgrade, after this
// pass's step.
type versionNode struct {
	m, w, s string
	// waiting is the guard the next step waits for.
	waiting versionGuard
	// conflict: the node changed under the step, which is retried.
	conflict bool
}

// versionPass is the ordered-upgrade part of a pass, nil for an owner
// without a version.
type versionPass struct {
	version string
	owner   identity.Owner
	nodes   map[string]*versionNode // every node with one of M, W, S
}

// node returns n's state; a node with none of the labels has the zero
// state.
func (v *versionPass) node(name string) versionNode {
	if s, ok := v.nodes[name]; ok {
		return *s
	}
	return versionNode{}
}

// stepVersionLabels makes at most one label step on every node that has
// one of obj's M, W and S labels, for obj with a version. It patches a
// node only when its step changes something and no guard holds it. It
// returns nodes with the patched ones replaced (the slice is a copy; the
// caller's objects, an informer's say, are not changed), and asks res
// for a requeue while a step is left to do. The device-plugin Pods are
// listed at most once, and only when some node is about to lose W.
func (r *Reconciler) stepVersionLabels(ctx context.Context, obj Object, nodes []*corev1.Node, res *Result) ([]*corev1.Node, *versionPass, error) {
	log := logr.FromContextOrDiscard(ctx)
	o := r.identity.Owner(obj.Namespace, obj.Name)
	mKey, wKey, sKey := o.VersionModuleLabel(), o.VersionWorkerPodLabel(), o.VersionSchedulePodLabel()
	vp := &versionPass{version: obj.Spec.ModuleLoader.Container.Version, owner: o, nodes: map[string]*versionNode{}}
	out := append([]*corev1.Node(nil), nodes...)

	var pluginNodes map[string]bool
	var listErr error
	hasPluginPod := func(node string) bool {
		if pluginNodes == nil && listErr == nil {
			pluginNodes, listErr = r.pluginPodNodes(ctx, obj, o)
		}
		// Without an answer, wait: deleting W under a running device
		// plugin is what the guard is for.
		return listErr != nil || pluginNodes[node]
	}
	for i, n := range out {
		m, w, s := n.Labels[mKey], n.Labels[wKey], n.Labels[sKey]
		if m == "" && w == "" && s == "" {
			continue
		}
		vn := &versionNode{m: m, w: w, s: s}
		vp.nodes[n.Name] = vn
		step, extra := versionAction(m, w, s)
		if step == stepNone {
			continue
		}
		if g := guarded(step, o, n, func() bool { return hasPluginPod(n.Name) }); g != guardNone {
			vn.waiting = g
			res.requeue(versionWaitRequeue)
			log.V(1).Info("ordered upgrade: a step waits", "node", n.Name, "state", stateOf(m, w, s).String(), "step", step.String(),
				"waitingFor", vn.waiting.String())
			continue
		}
		key, value := wKey, m
		switch step {
		case stepAddSchedule, stepDeleteSchedule:
			key = sKey
		}
		var v *string
		if step == stepAddWorker || step == stepAddSchedule {
			v = &value
		}
		updated, err := r.patchNodeLabel(ctx, n, key, v)
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			// Our view of the node was old: decide again on the next pass.
			vn.conflict = true
			res.requeue(versionStepRequeue)
			log.V(1).Info("ordered upgrade: the node changed under the step; retrying", "node", n.Name)
			continue
		case err != nil:
			return out, vp, fmt.Errorf("ordered upgrade of %s on node %s: %w", o, n.Name, err)
		}
		out[i] = updated
		vn.w, vn.s = updated.Labels[wKey], updated.Labels[sKey]
		res.requeue(versionStepRequeue)
		why := fmt.Sprintf("%s is %q", mKey, m)
		if m == "" {
			why = mKey + " is not set"
		}
		if extra {
			why += fmt.Sprintf("; %s is not in KMM's table, which would leave the node stuck", stateOf(m, w, s))
		}
		log.V(1).Info("ordered upgrade: stepped", "node", n.Name, "step", step.String(), "label", key, "value", value)
		if v != nil {
			r.event(obj, corev1.EventTypeNormal, eventVersionLabelAdded, "node %s: set %s=%s (%s)", n.Name, key, value, why)
		} else {
			r.event(obj, corev1.EventTypeNormal, eventVersionLabelRemoved, "node %s: removed %s (%s)", n.Name, key, why)
		}
	}
	if listErr != nil {
		return out, vp, fmt.Errorf("ordered upgrade of %s: listing its device-plugin and DRA Pods: %w", o, listErr)
	}
	return out, vp, nil
}

func (g versionGuard) String() string {
	return [...]string{"nothing", "device-plugin or DRA Pod", "ready label or loaded record"}[g]
}

// patchNodeLabel sets (v != nil) or removes one label of n with a merge
// patch that holds n's resourceVersion, so a step decided on an outdated
// view of the node fails with a conflict instead of applying.
func (r *Reconciler) patchNodeLabel(ctx context.Context, n *corev1.Node, key string, v *string) (*corev1.Node, error) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": n.ResourceVersion,
		"labels":          map[string]*string{key: v},
	}})
	if err != nil {
		return nil, err
	}
	return r.client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{})
}

// pluginPodNodes returns the nodes on which a device-plugin or DRA Pod
// of o runs: KMM's guard before removing W. One list, by the owner-name
// and role labels, in the owner's Pod namespace; every phase counts,
// terminating Pods too.
func (r *Reconciler) pluginPodNodes(ctx context.Context, obj Object, o identity.Owner) (map[string]bool, error) {
	sel := fmt.Sprintf("%s=%s,%s in (%s,%s)", o.NameLabel(), identity.LabelValue(o.Name), o.RoleLabel(),
		identity.RoleDevicePlugin, identity.RoleDRA)
	list, err := r.client.CoreV1().Pods(obj.podNamespace()).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for i := range list.Items {
		if n := list.Items[i].Spec.NodeName; n != "" {
			out[n] = true
		}
	}
	return out, nil
}

// unkeep drops from keep (the selected nodes that are not schedulable for
// the owner, which keep what they have) those without W: the ordered
// upgrade asks them to unload, and a node is often cordoned for just
// that. As in KMM, nothing new is loaded there until it is schedulable
// again.
func (v *versionPass) unkeep(nodes []*corev1.Node, keep map[string]bool) {
	for _, n := range nodes {
		if keep[n.Name] && n.Labels[v.owner.VersionWorkerPodLabel()] == "" {
			delete(keep, n.Name)
		}
	}
}

// afterSync asks for a prompt pass when the loader has just finished an
// unload that a step waits for (the loaded record goes in this pass,
// after the step was decided).
func (v *versionPass) afterSync(states []loader.NodeState, res *Result) {
	for i := range states {
		if vn, ok := v.nodes[states[i].Node]; ok && vn.waiting == guardLoaded && states[i].Phase == loader.PhaseUnloaded {
			res.requeue(versionStepRequeue)
		}
	}
}

// waitReason is why a node of an ordered upgrade is not at the spec's
// version, if it is not.
func (v *versionPass) waitReason(name string) (reason.Reason, bool) {
	vn := v.node(name)
	switch {
	case vn.waiting == guardDevicePlugin:
		return reason.WaitingForDevicePlugin, true
	case vn.waiting == guardLoaded:
		return reason.WaitingForUnload, true
	case vn.conflict || (vn.m == "" && (vn.w != "" || vn.s != "")):
		return reason.VersionStepping, true
	case vn.m != v.version:
		return reason.VersionNotRequested, true
	case vn.w != v.version || vn.s != v.version:
		return reason.VersionStepping, true
	}
	return "", false
}

// desired reports whether a selected node is desired for a versioned
// owner: it has M, the administrator's request for a version. A node
// without M gets nothing, as in KMM; one that lost it is being unloaded
// (its W and S go first) and is named apart (detail).
func (v *versionPass) desired(name string) bool { return v.node(name).m != "" }

// detail is the part of the Loaded message that explains the ordered
// upgrade: nodes at another version, nodes being unloaded, nodes
// without M.
func (v *versionPass) detail(selected []*corev1.Node) string {
	var unlabelled, leaving, other []string
	for _, n := range selected {
		vn := v.node(n.Name)
		rr, _ := v.waitReason(n.Name)
		switch {
		case vn.m == "" && (vn.w != "" || vn.s != ""):
			leaving = append(leaving, fmt.Sprintf("%s (%s)", n.Name, rr))
		case vn.m == "":
			unlabelled = append(unlabelled, n.Name)
		case rr == reason.VersionNotRequested:
			other = append(other, fmt.Sprintf("%s (%q)", n.Name, vn.m))
		}
	}
	key := v.owner.VersionModuleLabel()
	var parts []string
	if len(other) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) have %s at another version than %q, so they keep what they have: %s",
			len(other), key, v.version, names(other, maxListedNodes)))
	}
	if len(leaving) > 0 {
		parts = append(parts, fmt.Sprintf("%d selected node(s) lost their %s label and are being unloaded: %s",
			len(leaving), key, names(leaving, maxListedNodes)))
	}
	if len(unlabelled) > 0 {
		parts = append(parts, fmt.Sprintf("%d selected node(s) have no %s label, so nothing is loaded there (set it to %q to load): %s",
			len(unlabelled), key, v.version, names(unlabelled, maxListedNodes)))
	}
	return strings.Join(parts, "; ")
}
