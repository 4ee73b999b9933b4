package kmm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/upgrade"
)

// ConditionUpgraded is the condition of a Reconciler with
// WithRollingUpgrade: True (reason.UpgradeDone) when every targeted node
// runs the desired module, False with reason.UpgradeInProgress while
// nodes move or wait, and reason.UpgradePaused when failed nodes stopped
// the rollout.
const ConditionUpgraded = "Upgraded"

// rollRequeue is how soon a pass with nodes in an upgrade comes again:
// waiting steps requeue, they never block.
const rollRequeue = 2 * time.Second

// WithRollingUpgrade moves nodes to a new image or version of a loaded
// module by itself, as p says (package upgrade), instead of reloading
// every node at once: at most p.MaxParallel nodes at a time and never
// more than p.MaxUnavailable targeted nodes without the module. Each
// node's progress is on the node (identity.Owner.UpgradeStateLabel and
// UpgradeAnnotation), so a restarted Reconciler resumes; a node with the
// skip label (UpgradeSkipLabel=true) keeps what it has. NewReconciler
// refuses a policy that p.Validate refuses. Nodes with nothing loaded
// yet (new nodes, a new kernel) are loaded at once, as without it. For an
// owner with spec.moduleLoader.container.version, the policy sets the
// version-module label of KMM's ordered upgrade itself: on a node when
// its upgrade reaches the load step, and at once on a node with nothing
// loaded and no such label; KMM's label steps then unload and load. A
// node with the skip label is left to the administrator's label.
func WithRollingUpgrade(p upgrade.Policy) Option {
	return func(o *options) { o.rolling = &p }
}

// rollNode is one targeted node of a rollout.
type rollNode struct {
	node  *corev1.Node
	facts upgrade.Node
}

// rollout is a pass's view of the rollout of obj.
type rollout struct {
	owner identity.Owner
	// version is spec.moduleLoader.container.version ("" for none): the
	// rollout then sets the owner's version-module label (see
	// rollVersionLabel).
	version string
	nodes   []*rollNode // by name
}

// rollGate reads each targeted node's upgrade state and returns what the
// loader is to load: load without the outdated nodes that have not
// reached the load step (they keep what they have, added to keep). want
// is what each node would load, version labels aside: a node's facts are
// taken against it. For a versioned owner, a node with the skip label is
// not gated: its version labels, the administrator's, decide.
func (r *Reconciler) rollGate(obj Object, t targets, load, want map[string]*loader.PodRequest, keep map[string]bool) (map[string]*loader.PodRequest, *rollout) {
	ro := &rollout{owner: r.identity.Owner(obj.Namespace, obj.Name), version: obj.Spec.ModuleLoader.Container.Version}
	gated := make(map[string]*loader.PodRequest, len(load))
	for k, v := range load {
		gated[k] = v
	}
	for _, n := range t.selected {
		rn := &rollNode{node: n, facts: nodeFacts(ro.owner, n, want[n.Name])}
		ro.nodes = append(ro.nodes, rn)
		f := rn.facts
		if f.Target == "" || f.Current || !f.Loaded || (f.Skip && ro.version != "") {
			continue
		}
		if f.State.LoadsNew() || (f.State == upgrade.Failed && f.Record.FailedIn == upgrade.Load) {
			continue
		}
		delete(gated, n.Name)
		keep[n.Name] = true
	}
	return gated, ro
}

// nodeFacts is what the node says of the owner's rollout, against want.
func nodeFacts(o identity.Owner, n *corev1.Node, want *loader.PodRequest) upgrade.Node {
	f := upgrade.Node{Name: n.Name, State: upgrade.State(n.Labels[o.UpgradeStateLabel()]),
		Skip: n.Labels[o.UpgradeSkipLabel()] == "true", Unschedulable: n.Spec.Unschedulable}
	f.Record, _ = upgrade.ParseRecord(n.Annotations[o.UpgradeAnnotation()]) // a damaged record starts empty
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			f.Ready = c.Status == corev1.ConditionTrue
		}
	}
	obs, ok, err := loader.ObservedBy(n, o)
	boot := n.Status.NodeInfo.BootID
	if ok && err == nil && (obs.BootID == "" || boot == "" || obs.BootID == boot) {
		f.Loaded = want == nil || obs.Config.KernelVersion == want.Config.KernelVersion
	}
	if want != nil {
		f.Target = upgradeTarget(want)
		f.Current = f.Loaded && obs.Version == want.ModuleVersion && equality.Semantic.DeepEqual(obs.Config, want.Config)
	}
	return f
}

// upgradeTarget identifies a desired module: a hash of its config and
// version.
func upgradeTarget(p *loader.PodRequest) string {
	b, _ := json.Marshal(struct {
		C any    `json:"c"`
		V string `json:"v"`
	}{p.Config, p.ModuleVersion}) // plain data: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// rollStep moves every node of ro one step, admits nodes to free slots,
// writes what changed on the nodes and sets the Upgraded condition.
func (r *Reconciler) rollStep(ctx context.Context, obj Object, ro *rollout, states []loader.NodeState, res *Result) error {
	p := *r.rolling
	now := r.now()
	byNode := map[string]*loader.NodeState{}
	for i := range states {
		byNode[states[i].Node] = &states[i]
	}
	var errs []error
	decisions := make([]upgrade.Decision, len(ro.nodes))
	after := make([]upgrade.Node, len(ro.nodes))
	for i, rn := range ro.nodes {
		f := &rn.facts
		if s := byNode[f.Name]; s != nil && s.Phase == loader.PhaseFailed && f.State == upgrade.Load {
			f.LoadFailed = s.Condition.Message
		}
		if err := r.stepPods(ctx, obj, ro.owner, p, f); err != nil {
			errs = append(errs, err)
			decisions[i] = upgrade.Decision{State: f.State, Record: f.Record}
			after[i] = *f
			continue
		}
		decisions[i] = upgrade.Step(p, *f, now)
		after[i] = *f
		after[i].State, after[i].Record = decisions[i].State, decisions[i].Record
	}
	plan := upgrade.Admit(p, after)
	if len(plan.Admit) > 0 {
		// Admission counts every targeted node: it is made only on a
		// view that is current (an informer's may lag behind writes).
		current, err := r.viewIsCurrent(ctx, obj, ro)
		if err != nil || !current {
			errs = append(errs, err)
			r.logger(ctx).V(1).Info("node view is older than the cluster: admission left for the next pass", "admit", len(plan.Admit))
			plan.Waiting += len(plan.Admit)
			plan.Admit = nil
			res.requeue(rollRequeue)
		}
	}
	for _, name := range plan.Admit {
		i := sort.Search(len(ro.nodes), func(i int) bool { return ro.nodes[i].facts.Name >= name })
		d := &decisions[i]
		d.State, d.Record.Since, d.Record.Message, d.Changed = upgrade.Cordon, now, "admitted", true
		after[i].State = upgrade.Cordon
	}
	for i, rn := range ro.nodes {
		d := decisions[i]
		if d.Action == upgrade.ActionEvict {
			d.Record.Message = r.evict(ctx, p, rn.facts.Pods)
			d.Changed = d.Record != rn.facts.Record || d.State != rn.facts.State
		}
		m, why := "", ""
		if ro.version != "" {
			m, why = rollVersionLabel(rn.facts, d.State, rn.node.Labels[ro.owner.VersionModuleLabel()], ro.version)
		}
		if !d.Changed && why == "" {
			continue
		}
		if why != "" {
			d.Changed = true // a write, for the label
		}
		if err := r.rollWrite(ctx, obj, ro.owner, rn, d, m, why); err != nil {
			errs = append(errs, err)
		}
	}
	inflight := false
	for _, n := range after {
		if n.State.InProgress() || (n.State == upgrade.Required && !n.Skip && !plan.Paused) {
			inflight = true
		}
	}
	for _, d := range decisions {
		if d.Changed {
			inflight = true
		}
	}
	if inflight {
		res.requeue(rollRequeue)
	}
	setCondition(&res.Status.Conditions, upgradedCondition(obj, plan, after), now)
	r.metrics.upgradeStates(r.identity.String(), obj, after)
	return errors.Join(errs...)
}

// stepPods fills f.Pods (and ValidationPods) with the Pods the node's
// step waits for; only the steps that wait for Pods list any.
func (r *Reconciler) stepPods(ctx context.Context, obj Object, o identity.Owner, p upgrade.Policy, f *upgrade.Node) error {
	list := func(ns, sel string) ([]corev1.Pod, error) {
		l, err := r.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel, FieldSelector: "spec.nodeName=" + f.Name})
		if err != nil {
			return nil, fmt.Errorf("upgrade of node %s: listing pods %q: %w", f.Name, sel, err)
		}
		return l.Items, nil
	}
	var pods []corev1.Pod
	var err error
	keep := func(pod *corev1.Pod) bool { return true }
	switch f.State {
	case upgrade.WaitForPods:
		if p.WaitForPods == nil {
			return nil
		}
		pods, err = list("", p.WaitForPods.Selector)
		keep = func(pod *corev1.Pod) bool { return !terminal(pod) }
	case upgrade.Evict:
		if p.Evict == nil {
			return nil
		}
		pods, err = list("", p.Evict.Selector)
		keep = func(pod *corev1.Pod) bool { return !terminal(pod) || pod.DeletionTimestamp != nil }
	case upgrade.StopDevicePlugin:
		// As KMM's ordered upgrade: any device plugin or DRA Pod of the
		// owner on the node, in any phase, terminating included.
		pods, err = list(obj.podNamespace(), fmt.Sprintf("%s=%s,%s in (%s,%s)", o.NameLabel(), o.Name, o.RoleLabel(),
			identity.RoleDevicePlugin, identity.RoleDRA))
	case upgrade.Validate:
		if p.Validation == nil {
			return nil
		}
		pods, err = list("", p.Validation.Selector)
		f.ValidationPods = len(pods)
		keep = func(pod *corev1.Pod) bool { return !validationReady(pod) }
	default:
		return nil
	}
	if err != nil {
		return err
	}
	for i := range pods {
		if keep(&pods[i]) {
			f.Pods = append(f.Pods, pods[i].Namespace+"/"+pods[i].Name)
		}
	}
	return nil
}

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func validationReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// evict evicts (or deletes) pods, namespace/name each, and says what
// happened: which are going, and which a PodDisruptionBudget holds.
func (r *Reconciler) evict(ctx context.Context, p upgrade.Policy, pods []string) string {
	var going, blocked, failed []string
	for _, ref := range pods {
		ns, name, _ := strings.Cut(ref, "/")
		var err error
		if p.Evict.Delete {
			err = r.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
		} else {
			err = r.client.PolicyV1().Evictions(ns).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
		}
		switch {
		case err == nil, apierrors.IsNotFound(err):
			going = append(going, ref)
		case apierrors.IsTooManyRequests(err):
			blocked = append(blocked, fmt.Sprintf("%s (%v)", ref, err))
		default:
			failed = append(failed, fmt.Sprintf("%s (%v)", ref, err))
		}
	}
	var parts []string
	if len(going) > 0 {
		parts = append(parts, "waiting for "+strings.Join(going, ", ")+" to go")
	}
	if len(blocked) > 0 {
		parts = append(parts, "a PodDisruptionBudget blocks the eviction of "+strings.Join(blocked, ", ")+"; retried")
	}
	if len(failed) > 0 {
		parts = append(parts, "evicting failed: "+strings.Join(failed, ", ")+"; retried")
	}
	return capLen(strings.Join(parts, "; "), 1024)
}

func capLen(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// rollWrite writes decision d on the node with one merge patch, with the
// node's resourceVersion as a precondition: the node is read first, and
// left for the next pass when someone else moved its upgrade keys since
// the pass's view.
//
// When why is not empty, the same patch sets the owner's version-module
// label to m (see rollVersionLabel), and the node is left for the next
// pass if that label moved since the view too.
func (r *Reconciler) rollWrite(ctx context.Context, obj Object, o identity.Owner, rn *rollNode, d upgrade.Decision, m, why string) error {
	name := rn.facts.Name
	fresh, err := r.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("upgrade of node %s: reading it: %w", name, err)
	}
	mKey := o.VersionModuleLabel()
	if fresh.Labels[o.UpgradeStateLabel()] != rn.node.Labels[o.UpgradeStateLabel()] ||
		fresh.Annotations[o.UpgradeAnnotation()] != rn.node.Annotations[o.UpgradeAnnotation()] ||
		fresh.Spec.Unschedulable != rn.node.Spec.Unschedulable ||
		(why != "" && fresh.Labels[mKey] != rn.node.Labels[mKey]) {
		r.logger(ctx).V(1).Info("node changed since the pass's view; upgrade step left for the next pass", "node", name)
		return nil
	}
	lbls := map[string]any{o.UpgradeStateLabel(): nullIfEmpty(string(d.State))}
	if why != "" {
		lbls[mKey] = m
	}
	meta := map[string]any{
		"resourceVersion": fresh.ResourceVersion,
		"labels":          lbls,
		"annotations":     map[string]any{o.UpgradeAnnotation(): d.Record.String()},
	}
	patch := map[string]any{"metadata": meta}
	switch d.Action {
	case upgrade.ActionCordon:
		patch["spec"] = map[string]any{"unschedulable": true}
	case upgrade.ActionUncordon:
		patch["spec"] = map[string]any{"unschedulable": nil}
	}
	body, _ := json.Marshal(patch) // plain data: cannot fail
	if _, err := r.client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return nil // the next pass sees the node as it is
		}
		return fmt.Errorf("upgrade of node %s: writing state %s: %w", name, d.State, err)
	}
	if why != "" {
		r.logger(ctx).Info("upgrade: version-module label set", "node", name, "label", mKey, "value", m, "why", why)
		r.event(obj, corev1.EventTypeNormal, eventVersionLabelAdded, "node %s: set %s=%s (%s)", name, mKey, m, why)
	}
	from := rn.facts.State
	if from == d.State {
		return nil
	}
	msg := d.Record.Message
	if msg != "" {
		msg = ": " + msg
	}
	r.logger(ctx).Info("upgrade step", "node", name, "from", string(from), "to", string(d.State), "message", d.Record.Message)
	r.metrics.upgradeStep(r.identity.String(), obj, d.State)
	if d.State == upgrade.Failed {
		r.event(obj, corev1.EventTypeWarning, string(reason.UpgradeFailed), "node %s: upgrade failed in %s%s", name, d.Record.FailedIn, msg)
	} else {
		r.event(obj, corev1.EventTypeNormal, string(reason.UpgradeInProgress), "node %s: %s -> %s%s", name, stateName(from), d.State, msg)
	}
	return nil
}

func stateName(s upgrade.State) string {
	if s == upgrade.None {
		return "(none)"
	}
	return string(s)
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// upgradedCondition summarizes a rollout.
func upgradedCondition(obj Object, pl upgrade.Plan, nodes []upgrade.Node) metav1.Condition {
	c := metav1.Condition{Type: ConditionUpgraded, ObservedGeneration: obj.Generation, Status: metav1.ConditionFalse}
	inProgress, skipped := 0, 0
	for _, n := range nodes {
		if n.State.InProgress() {
			inProgress++
		}
		if n.State == upgrade.Required && n.Skip {
			skipped++
		}
	}
	switch {
	case pl.Paused:
		why := make([]string, 0, len(pl.Failed))
		for _, n := range nodes {
			if n.State == upgrade.Failed {
				why = append(why, fmt.Sprintf("node %s: %s", n.Name, n.Record.Message))
			}
		}
		c.Reason = string(reason.UpgradePaused)
		c.Message = capMessage(fmt.Sprintf("the rollout is paused: %d node(s) failed (failure threshold reached): %s; %d in progress, %d waiting",
			len(pl.Failed), summarize(why, maxProblems), inProgress, pl.Waiting))
	case inProgress == 0 && pl.Waiting == 0 && len(pl.Failed) == 0:
		c.Status, c.Reason = metav1.ConditionTrue, string(reason.UpgradeDone)
		c.Message = fmt.Sprintf("none of the %d targeted node(s) has an outdated module or an upgrade under way", len(nodes))
	default:
		c.Reason = string(reason.UpgradeInProgress)
		c.Message = fmt.Sprintf("%d node(s) upgrading (at most %d at a time), %d waiting (%d skipped), %d failed; %d of %d targeted node(s) unavailable (at most %d)",
			inProgress, pl.MaxParallel, pl.Waiting, skipped, len(pl.Failed), pl.Unavailable, len(nodes), pl.MaxUnavailable)
	}
	return c
}

// rollCleanup removes the owner's upgrade keys from nodes, and uncordons
// those the upgrade cordoned and had not uncordoned yet: for a deleted
// owner, and for nodes that left its selector. A conflict leaves the node
// for the next pass.
func (r *Reconciler) rollCleanup(ctx context.Context, obj Object, o identity.Owner, nodes []*corev1.Node) (pending bool, err error) {
	var errs []error
	for _, n := range nodes {
		state, hasState := n.Labels[o.UpgradeStateLabel()]
		raw, hasRecord := n.Annotations[o.UpgradeAnnotation()]
		if !hasState && !hasRecord {
			continue
		}
		rec, _ := upgrade.ParseRecord(raw) // a damaged record cordoned nothing we know of
		patch := map[string]any{"metadata": map[string]any{
			"resourceVersion": n.ResourceVersion,
			"labels":          map[string]any{o.UpgradeStateLabel(): nil},
			"annotations":     map[string]any{o.UpgradeAnnotation(): nil},
		}}
		s := upgrade.State(state)
		uncordon := rec.Cordoned && n.Spec.Unschedulable && (s.InProgress() || s == upgrade.Failed)
		if uncordon {
			patch["spec"] = map[string]any{"unschedulable": nil}
		}
		body, _ := json.Marshal(patch) // plain data: cannot fail
		_, perr := r.client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, body, metav1.PatchOptions{})
		switch {
		case apierrors.IsConflict(perr):
			pending = true
		case apierrors.IsNotFound(perr):
		case perr != nil:
			errs = append(errs, fmt.Errorf("upgrade of node %s: removing its upgrade state: %w", n.Name, perr))
		default:
			r.logger(ctx).Info("upgrade state removed", "node", n.Name, "state", state, "uncordoned", uncordon)
			if uncordon {
				r.event(obj, corev1.EventTypeNormal, string(reason.UpgradeInProgress), "node %s: %s -> (none): uncordoned, the upgrade no longer applies", n.Name, s)
			}
		}
	}
	return pending, errors.Join(errs...)
}

// viewIsCurrent reports whether the pass's view of the targeted nodes is
// what the API server holds now: the same nodes, with the same upgrade
// keys, loaded module, cordon and readiness. One list, made only when a
// node is about to be admitted.
func (r *Reconciler) viewIsCurrent(ctx context.Context, obj Object, ro *rollout) (bool, error) {
	l, err := r.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(obj.Spec.Selector).String()})
	if err != nil {
		return false, fmt.Errorf("upgrade: listing the targeted nodes: %w", err)
	}
	view := make(map[string]*corev1.Node, len(ro.nodes))
	for _, rn := range ro.nodes {
		view[rn.node.Name] = rn.node
	}
	seen := 0
	for i := range l.Items {
		fresh := &l.Items[i]
		v, ok := view[fresh.Name]
		if !ok {
			if r.targetedNode(obj, fresh) {
				return false, nil // a targeted node the view does not have
			}
			continue
		}
		seen++
		if rollFingerprint(ro.owner, v) != rollFingerprint(ro.owner, fresh) {
			return false, nil
		}
	}
	return seen == len(view), nil
}

// targetedNode reports whether the selector's node n is targeted (see
// target).
func (r *Reconciler) targetedNode(obj Object, n *corev1.Node) bool {
	return len(r.target(obj, []*corev1.Node{n}).selected) == 1
}

// rollFingerprint is what admission depends on of a node.
func rollFingerprint(o identity.Owner, n *corev1.Node) string {
	ready := ""
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = string(c.Status)
		}
	}
	_, loaded := n.Labels[o.ReadyLabel()]
	b, _ := json.Marshal([]any{n.Labels[o.UpgradeStateLabel()], n.Labels[o.UpgradeSkipLabel()], n.Annotations[o.UpgradeAnnotation()],
		n.Annotations[o.ObservedAnnotation()], loaded, n.Spec.Unschedulable, ready, n.Status.NodeInfo.BootID}) // plain data: cannot fail
	return string(b)
}
