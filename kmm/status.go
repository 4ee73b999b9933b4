package kmm

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
)

// Condition types on a Module's status.
const (
	// ConditionImagesReady: every kernel's image exists (built and signed
	// where the Module says so).
	ConditionImagesReady = "ImagesReady"
	// ConditionLoaded: the module is loaded on every desired node.
	ConditionLoaded = "Loaded"
	// ConditionDegraded: something needs attention; the message names
	// the kernels and nodes and why.
	ConditionDegraded = "Degraded"
)

// status computes the new status from a pass.
func (r *Reconciler) status(obj Object, t targets, kernels []string, kstat map[string]*v1beta1.KernelStatus,
	desired map[string]*loader.PodRequest, states []loader.NodeState) v1beta1.ModuleStatus {
	st := *obj.Status.DeepCopy()
	now := r.now()
	available := int32(0)
	var failing []string
	for _, s := range states {
		switch {
		case s.Phase == loader.PhaseLoaded && desired[s.Node] != nil:
			available++
		case s.Phase == loader.PhaseFailed || s.Phase == loader.PhaseBlocked:
			failing = append(failing, fmt.Sprintf("node %s: %s: %s", s.Node, s.Condition.Reason, s.Condition.Message))
		}
	}
	sort.Strings(failing)
	st.ModuleLoader = &v1beta1.DaemonSetStatus{
		NodesMatchingSelectorNumber: int32(t.matching),
		DesiredNumber:               int32(len(desired)),
		AvailableNumber:             available,
	}
	st.Kernels = make([]v1beta1.KernelStatus, 0, len(kernels))
	var imageProblems, waiting []string
	imageReason := ""
	for _, k := range kernels {
		ks := kstat[k]
		st.Kernels = append(st.Kernels, *ks)
		switch ks.State {
		case StateReady, StateNoMapping:
		case StateBuilding:
			waiting = append(waiting, fmt.Sprintf("kernel %s: %s", k, ks.Message))
			if imageReason == "" {
				imageReason = "Building"
			}
		default:
			imageProblems = append(imageProblems, fmt.Sprintf("kernel %s: %s: %s", k, ks.State, ks.Message))
			if imageReason == "" || imageReason == "Building" {
				imageReason = ks.State
			}
		}
	}
	for _, n := range t.noKernel {
		failing = append(failing, fmt.Sprintf("node %s: NoKernelVersion: the node reports no kernel version", n))
	}

	images := metav1.Condition{Type: ConditionImagesReady, Status: metav1.ConditionTrue, Reason: "AllImagesReady",
		Message: fmt.Sprintf("the images of all %d kernel(s) exist", len(kernels))}
	if len(imageProblems)+len(waiting) > 0 {
		images.Status, images.Reason = metav1.ConditionFalse, imageReason
		images.Message = summarize(append(imageProblems, waiting...), 5)
	}
	loaded := metav1.Condition{Type: ConditionLoaded, Status: metav1.ConditionTrue, Reason: "AllNodesLoaded",
		Message: fmt.Sprintf("loaded on all %d desired node(s)", len(desired))}
	switch {
	case len(desired) == 0 && t.matching == 0:
		loaded.Status, loaded.Reason, loaded.Message = metav1.ConditionFalse, "NoTargetedNodes", "no schedulable node matches the selector"
	case len(desired) == 0:
		loaded.Status, loaded.Reason = metav1.ConditionFalse, "NoImageReady"
		loaded.Message = fmt.Sprintf("%d node(s) match, but no image is ready for their kernels", t.matching)
	case available < int32(len(desired)):
		loaded.Status, loaded.Reason = metav1.ConditionFalse, "Loading"
		loaded.Message = fmt.Sprintf("loaded on %d of %d desired node(s)", available, len(desired))
	}
	degraded := metav1.Condition{Type: ConditionDegraded, Status: metav1.ConditionFalse, Reason: "AsExpected", Message: "nothing needs attention"}
	if problems := append(append([]string{}, imageProblems...), failing...); len(problems) > 0 {
		degraded.Status = metav1.ConditionTrue
		degraded.Reason = "NodesFailing"
		if len(imageProblems) > 0 {
			degraded.Reason = "ImagesFailing"
		}
		degraded.Message = summarize(problems, 10)
	}
	for _, c := range []metav1.Condition{images, loaded, degraded} {
		c.ObservedGeneration = obj.Generation
		setCondition(&st.Conditions, c, now)
	}
	return st
}

// setCondition sets c, keeping the transition time when the status did
// not change, so an unchanged pass leaves the status equal.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, now time.Time) {
	c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	meta.SetStatusCondition(conds, c)
}

// summarize joins items, cutting after max with a count of the rest.
func summarize(items []string, max int) string {
	if len(items) <= max {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:max], "; ") + fmt.Sprintf("; and %d more", len(items)-max)
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
		if k.Image == "" || seen[k.Image+k.State] {
			continue
		}
		seen[k.Image+k.State] = true
		prev, had := old[k.Kernel+"\x00"+k.Image]
		if had && prev.State == k.State && prev.Build == k.Build {
			continue
		}
		switch k.State {
		case StateBuilding:
			if !had || prev.State != StateBuilding {
				r.event(obj, corev1.EventTypeNormal, "BuildStarted", "building %s for kernel %s (%s)", k.Image, k.Kernel, k.Build)
			}
		case StateReady:
			switch {
			case made[k.Image] == "built":
				r.event(obj, corev1.EventTypeNormal, "ImageBuilt", "built and pushed %s for kernel %s (%s)", k.Image, k.Kernel, k.Digest)
			case made[k.Image] == "signed":
				r.event(obj, corev1.EventTypeNormal, "ImageSigned", "signed and pushed %s for kernel %s (%s)", k.Image, k.Kernel, k.Digest)
			case had && (prev.State == StateBuilding || prev.State == StateBuildFailed || prev.State == StateSignFailed):
				r.event(obj, corev1.EventTypeNormal, "ImageReady", "%s for kernel %s is ready (%s)", k.Image, k.Kernel, k.Digest)
			}
		case StateBuildFailed:
			r.event(obj, corev1.EventTypeWarning, "BuildFailed", "kernel %s: %s", k.Kernel, k.Message)
		case StateSignFailed:
			r.event(obj, corev1.EventTypeWarning, "SignFailed", "kernel %s: %s", k.Kernel, k.Message)
		case StateMissing:
			r.event(obj, corev1.EventTypeWarning, "ImageMissing", "kernel %s: %s", k.Kernel, k.Message)
		case StateCheckFailed:
			r.event(obj, corev1.EventTypeWarning, "ImageCheckFailed", "kernel %s: %s", k.Kernel, k.Message)
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
