package kmm

import (
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
)

// Condition types on a Module's status. Their reasons are constants of
// package github.com/kmmkit/kmmkit/reason; the README's "What the status
// means" table lists which reason each can carry and what to do.
const (
	// ConditionValid: the spec passed v1beta1.Validate. When False
	// (reason.InvalidSpec) nothing was changed in the cluster and the
	// message lists every error with its field path.
	ConditionValid = "Valid"
	// ConditionImagesReady: the image of every kernel of the selected
	// nodes exists (built and signed where the Module says so). A kernel
	// that no mapping matches makes it False (reason.NoMapping).
	ConditionImagesReady = "ImagesReady"
	// ConditionLoaded: the module is loaded on every desired node, which
	// is every schedulable node the selector matches.
	ConditionLoaded = "Loaded"
	// ConditionDegraded: some node does not have the module as the spec
	// asks and will not get it without a change (a missing mapping, a
	// refused pull secret, a failed build, sign or worker), or the spec
	// is invalid; the message names the kernels and nodes and why.
	ConditionDegraded = "Degraded"
)

// Limits of condition messages: the API server refuses a condition
// message over 32768 bytes, and a reader wants the first few causes.
const (
	maxMessage     = 32 << 10
	maxListedNodes = 5
	maxProblems    = 10
)

// problem is why some nodes do not have the module as the spec asks.
type problem struct {
	reason  reason.Reason
	kernel  string // set when the cause is the kernel's (its image, its mapping)
	nodes   []string
	message string
}

func (p problem) String() string {
	where := "node " + p.nodes[0]
	switch {
	case p.kernel != "":
		where = fmt.Sprintf("kernel %s on %s", p.kernel, nodeList(p.nodes))
	case len(p.nodes) > 1:
		where = nodeList(p.nodes)
	}
	return fmt.Sprintf("%s: %s: %s", where, p.reason, p.message)
}

// nodeList is "3 node(s): a, b, c", with at most maxListedNodes names.
func nodeList(nodes []string) string {
	return fmt.Sprintf("%d node(s) (%s)", len(nodes), names(nodes, maxListedNodes))
}

// failing reports whether a node state needs attention: a worker that
// fails, cannot start, or is stuck.
func failing(s *loader.NodeState) bool {
	return s.Phase == loader.PhaseFailed || s.Phase == loader.PhaseBlocked || reason.Reason(s.Condition.Reason) == reason.WorkerStuck
}

// nodeReason is the reason of a node state, WorkerFailed when the loader
// gave none.
func nodeReason(s *loader.NodeState) reason.Reason {
	if s.Condition.Reason == "" {
		return reason.WorkerFailed
	}
	return reason.Reason(s.Condition.Reason)
}

// nodeProblems are the workers that need attention, on any node the
// loader reports (a cordoned node that keeps the module, too).
func nodeProblems(states []loader.NodeState) []problem {
	var out []problem
	for i := range states {
		if s := &states[i]; failing(s) {
			out = append(out, problem{reason: nodeReason(s), nodes: []string{s.Node}, message: s.Condition.Message})
		}
	}
	return out
}

// oneReason is the reason all of rs share, or mixed.
func oneReason(rs []reason.Reason, mixed reason.Reason) reason.Reason {
	for _, r := range rs[1:] {
		if r != rs[0] {
			return mixed
		}
	}
	return rs[0]
}

func validCondition(obj Object) metav1.Condition {
	return metav1.Condition{Type: ConditionValid, Status: metav1.ConditionTrue, Reason: string(reason.Valid),
		Message: "the spec passed validation", ObservedGeneration: obj.Generation}
}

// degradedCondition reports problems; bad of the desired nodes have one.
func degradedCondition(obj Object, problems []problem, bad, desired int) metav1.Condition {
	c := metav1.Condition{Type: ConditionDegraded, Status: metav1.ConditionFalse, Reason: string(reason.AsExpected),
		Message: "nothing needs attention", ObservedGeneration: obj.Generation}
	if len(problems) == 0 {
		return c
	}
	rs := make([]reason.Reason, len(problems))
	items := make([]string, len(problems))
	for i, p := range problems {
		rs[i], items[i] = p.reason, p.String()
	}
	c.Status, c.Reason = metav1.ConditionTrue, string(oneReason(rs, reason.NodesFailing))
	c.Message = summarize(items, maxProblems)
	if bad > 0 {
		c.Message = fmt.Sprintf("%d of %d desired node(s) do not have the module as the spec asks: %s", bad, desired, c.Message)
	}
	c.Message = capMessage(c.Message)
	return c
}

// status computes the new status from a pass. Every selected node is
// desired; it is available when its worker reports the module loaded as
// load asks. A selected node without a ready image, a mapping or a
// kernel version is desired and not available, and so is one whose
// worker fails.
func (r *Reconciler) status(obj Object, t targets, kernels []string, kstat map[string]*v1beta1.KernelStatus,
	load map[string]*loader.PodRequest, states []loader.NodeState, lerr error, versions *versionPass) v1beta1.ModuleStatus {
	st := *obj.Status.DeepCopy()
	now := r.now()
	desired := len(t.selected)
	// isDesired: with a version, only the selected nodes with the
	// version-module label are (see versionPass.desired).
	isDesired := func(string) bool { return true }
	if versions != nil {
		isDesired = versions.desired
		desired = 0
		for _, n := range t.selected {
			if isDesired(n.Name) {
				desired++
			}
		}
	}
	byNode := make(map[string]*loader.NodeState, len(states))
	for i := range states {
		byNode[states[i].Node] = &states[i]
	}

	// Why each desired node is without the module: a problem (bad) or
	// progress (waiting).
	bad := map[string]reason.Reason{}
	waiting := map[string]reason.Reason{}
	var problems []problem
	if len(t.noKernel) > 0 {
		problems = append(problems, problem{reason: reason.NoKernelVersion, nodes: t.noKernel,
			message: "the node reports no kernel version (status.nodeInfo.kernelVersion)"})
		for _, n := range t.noKernel {
			bad[n] = reason.NoKernelVersion
		}
	}
	st.Kernels = make([]v1beta1.KernelStatus, 0, len(kernels))
	var imageFailing, imageWaiting []string
	var imageReasons []reason.Reason
	for _, k := range kernels {
		ks := kstat[k]
		st.Kernels = append(st.Kernels, *ks)
		nodes := t.byKernel[k]
		switch ks.State {
		case v1beta1.KernelStateReady:
		case v1beta1.KernelStateBuilding:
			imageWaiting = append(imageWaiting, fmt.Sprintf("kernel %s: %s", k, ks.Message))
			for _, n := range nodes {
				waiting[n.Name] = reason.Building
			}
		default:
			imageFailing = append(imageFailing, fmt.Sprintf("kernel %s: %s: %s", k, ks.Reason, ks.Message))
			imageReasons = append(imageReasons, ks.Reason)
			names := make([]string, len(nodes))
			for i, n := range nodes {
				names[i] = n.Name
				bad[n.Name] = ks.Reason
			}
			sort.Strings(names)
			problems = append(problems, problem{reason: ks.Reason, kernel: k, nodes: names, message: ks.Message})
		}
	}
	available, unknown := 0, 0
	for _, n := range t.selected {
		if !isDesired(n.Name) {
			delete(bad, n.Name)
			delete(waiting, n.Name)
			continue
		}
		if load[n.Name] == nil {
			if versions != nil {
				// At another version the labels say why; at the spec's,
				// a build in progress may.
				_, failed := bad[n.Name]
				_, building := waiting[n.Name]
				current := versionLoad(versions.node(n.Name).w, versions.version) == loadCurrent
				if rr, ok := versions.waitReason(n.Name); ok && !failed && !(current && building) {
					waiting[n.Name] = rr
				}
			}
			continue // no image to load: counted above
		}
		s := byNode[n.Name]
		switch {
		case s == nil && lerr != nil:
			unknown++
		case s == nil:
			waiting[n.Name] = reason.Loading
		case s.Phase == loader.PhaseLoaded:
			available++
		case failing(s):
			bad[n.Name] = nodeReason(s)
		default:
			waiting[n.Name] = reason.Loading
		}
	}
	problems = append(problems, nodeProblems(states)...)
	if unknown > 0 {
		// The loader could not say: keep what the last pass knew.
		if prev := obj.Status.ModuleLoader; prev != nil {
			available = max(available, min(int(prev.AvailableNumber), available+unknown))
		}
	}
	st.ModuleLoader = &v1beta1.DaemonSetStatus{
		NodesMatchingSelectorNumber: int32(len(t.selected)),
		DesiredNumber:               int32(desired),
		AvailableNumber:             int32(available),
	}

	images := metav1.Condition{Type: ConditionImagesReady, Status: metav1.ConditionTrue, Reason: string(reason.AllImagesReady),
		Message: fmt.Sprintf("the images of all %d kernel(s) exist", len(kernels))}
	switch {
	case len(imageFailing) > 0:
		images.Status, images.Reason = metav1.ConditionFalse, string(oneReason(imageReasons, reason.ImagesFailing))
		images.Message = capMessage(summarize(append(imageFailing, imageWaiting...), 5))
	case len(imageWaiting) > 0:
		images.Status, images.Reason = metav1.ConditionFalse, string(reason.Building)
		images.Message = capMessage(summarize(imageWaiting, 5))
	}

	loaded := metav1.Condition{Type: ConditionLoaded, Status: metav1.ConditionTrue, Reason: string(reason.AllNodesLoaded),
		Message: fmt.Sprintf("loaded on all %d desired node(s)", desired)}
	switch {
	case desired == 0 && versions != nil && len(t.selected) > 0:
		loaded.Status, loaded.Reason = metav1.ConditionFalse, string(reason.NoVersionModuleLabel)
		loaded.Message = fmt.Sprintf("no selected node has the %s label: set it to %q on the nodes that should load this version", versions.owner.VersionModuleLabel(), versions.version)
	case desired == 0:
		loaded.Status, loaded.Reason, loaded.Message = metav1.ConditionFalse, string(reason.NoTargetedNodes), "no schedulable node matches the selector"
	case unknown > 0:
		loaded.Status, loaded.Reason = metav1.ConditionUnknown, string(reason.LoaderFailed)
		loaded.Message = capMessage(fmt.Sprintf("the node loader failed before it reported %d of %d desired node(s): %v", unknown, desired, lerr))
	case available < desired:
		loaded.Status = metav1.ConditionFalse
		var why []string
		var badReasons, waitReasons []reason.Reason
		building := false
		for _, n := range t.selected {
			if rr, ok := bad[n.Name]; ok {
				why = append(why, fmt.Sprintf("%s (%s)", n.Name, rr))
				badReasons = append(badReasons, rr)
			} else if rr, ok := waiting[n.Name]; ok {
				why = append(why, fmt.Sprintf("%s (%s)", n.Name, rr))
				building = building || rr == reason.Building
				waitReasons = append(waitReasons, rr)
			}
		}
		switch {
		case len(badReasons) > 0:
			loaded.Reason = string(oneReason(badReasons, reason.NodesFailing))
		case building:
			loaded.Reason = string(reason.Building)
		case len(waitReasons) > 0:
			loaded.Reason = string(oneReason(waitReasons, reason.Loading))
		default:
			loaded.Reason = string(reason.Loading)
		}
		loaded.Message = capMessage(fmt.Sprintf("loaded on %d of %d desired node(s); not on %d: %s",
			available, desired, desired-available, names(why, maxProblems)))
	}
	if versions != nil && loaded.Reason != string(reason.LoaderFailed) {
		if d := versions.detail(t.selected); d != "" {
			loaded.Message = capMessage(loaded.Message + "; " + d)
		}
	}
	for _, c := range []metav1.Condition{validCondition(obj), images, loaded, degradedCondition(obj, problems, len(bad), desired)} {
		c.ObservedGeneration = obj.Generation
		setCondition(&st.Conditions, c, now)
	}
	return st
}

// capMessage cuts a condition message to what the API server accepts.
func capMessage(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	const tail = " … (cut)"
	cut := maxMessage - len(tail)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + tail
}

// setCondition sets c, keeping the transition time when the status did
// not change, so an unchanged pass leaves the status equal.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, now time.Time) {
	c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	meta.SetStatusCondition(conds, c)
}

// summarize joins items with "; ", cutting after max with a count of the
// rest.
func summarize(items []string, max int) string { return joinMax(items, max, "; ") }

// names joins node names with ", ", cutting after max with a count of
// the rest.
func names(items []string, max int) string { return joinMax(items, max, ", ") }

func joinMax(items []string, max int, sep string) string {
	if len(items) <= max {
		return strings.Join(items, sep)
	}
	return strings.Join(items[:max], sep) + fmt.Sprintf("%sand %d more", sep, len(items)-max)
}

// events emits Module events for what changed since the last status:
// builds started, succeeded or failed, signing, missing images, and
// nodes that started failing. Nothing is emitted when nothing changed.
func (r *Reconciler) events(obj Object, st v1beta1.ModuleStatus, made map[string]string) {
	old := map[string]v1beta1.KernelStatus{}
	for _, k := range obj.Status.Kernels {
		old[k.Kernel+"\x00"+k.Image] = k
	}
	seen := map[string]bool{}
	for _, k := range st.Kernels {
		if k.Image == "" || seen[k.Image+string(k.State)] {
			continue
		}
		seen[k.Image+string(k.State)] = true
		prev, had := old[k.Kernel+"\x00"+k.Image]
		if had && prev.State == k.State && prev.Reason == k.Reason && prev.Build == k.Build {
			continue
		}
		switch k.State {
		case v1beta1.KernelStateBuilding:
			if !had || prev.State != v1beta1.KernelStateBuilding {
				r.event(obj, corev1.EventTypeNormal, "BuildStarted", "building %s for kernel %s (%s)", k.Image, k.Kernel, k.Build)
			}
		case v1beta1.KernelStateReady:
			switch {
			case made[k.Image] == "built":
				r.event(obj, corev1.EventTypeNormal, "ImageBuilt", "built and pushed %s for kernel %s (%s)", k.Image, k.Kernel, k.Digest)
			case made[k.Image] == "signed":
				r.event(obj, corev1.EventTypeNormal, "ImageSigned", "signed and pushed %s for kernel %s (%s)", k.Image, k.Kernel, k.Digest)
			case had && (prev.State == v1beta1.KernelStateBuilding || prev.State == v1beta1.KernelStateBuildFailed || prev.State == v1beta1.KernelStateSignFailed):
				r.event(obj, corev1.EventTypeNormal, "ImageReady", "%s for kernel %s is ready (%s)", k.Image, k.Kernel, k.Digest)
			}
		case v1beta1.KernelStateBuildFailed:
			r.event(obj, corev1.EventTypeWarning, string(reason.BuildFailed), "kernel %s: %s: %s", k.Kernel, k.Reason, k.Message)
		case v1beta1.KernelStateSignFailed:
			r.event(obj, corev1.EventTypeWarning, string(reason.SignFailed), "kernel %s: %s: %s", k.Kernel, k.Reason, k.Message)
		case v1beta1.KernelStateMissing:
			r.event(obj, corev1.EventTypeWarning, "ImageMissing", "kernel %s: %s: %s", k.Kernel, k.Reason, k.Message)
		case v1beta1.KernelStateCheckFailed:
			r.event(obj, corev1.EventTypeWarning, "ImageCheckFailed", "kernel %s: %s: %s", k.Kernel, k.Reason, k.Message)
		}
	}
	was := meta.FindStatusCondition(obj.Status.Conditions, ConditionDegraded)
	now := meta.FindStatusCondition(st.Conditions, ConditionDegraded)
	if now != nil && now.Status == metav1.ConditionTrue && (was == nil || was.Status != now.Status || was.Message != now.Message) {
		r.event(obj, corev1.EventTypeWarning, "Degraded", "%s", now.Message)
	}
	wasLoaded := meta.FindStatusCondition(obj.Status.Conditions, ConditionLoaded)
	isLoaded := meta.FindStatusCondition(st.Conditions, ConditionLoaded)
	if isLoaded != nil && isLoaded.Status == metav1.ConditionTrue && (wasLoaded == nil || wasLoaded.Status != metav1.ConditionTrue ||
		!equality.Semantic.DeepEqual(wasLoaded.Message, isLoaded.Message)) {
		r.event(obj, corev1.EventTypeNormal, "Loaded", "%s", isLoaded.Message)
	}
}

func (r *Reconciler) event(obj Object, typ, reason, format string, args ...any) {
	if r.recorder == nil || obj.Ref == nil {
		return
	}
	r.recorder.Eventf(obj.Ref, typ, reason, format, args...)
}
