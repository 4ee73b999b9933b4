package loader

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/reason"
)

// Condition reasons for a module on a node: the reason package's words,
// as the strings a metav1.Condition carries.
const (
	ReasonLoaded         = string(reason.Loaded)
	ReasonLoading        = string(reason.Loading)
	ReasonUnloading      = string(reason.Unloading)
	ReasonUnloaded       = string(reason.Unloaded)
	ReasonImagePull      = string(reason.WorkerImagePullFailed)
	ReasonWorkerFailed   = string(reason.WorkerFailed)
	ReasonWorkerStuck    = string(reason.WorkerStuck)
	ReasonPodFailed      = string(reason.WorkerPodFailed)
	ReasonPodRejected    = string(reason.WorkerPodRejected)
	ReasonNodeTainted    = string(reason.NodeTaintNotTolerated)
	ReasonNodeNotReady   = string(reason.NodeNotReady)
	ReasonInvalidRequest = string(reason.InvalidRequest)
	ReasonNameConflict   = string(reason.NameConflict)
	ReasonModuleInUse    = string(reason.ModuleInUse)
)

// ReasonModuleBuildMismatch is the condition reason of a node whose
// kernel runs another build of the module than the image's.
const ReasonModuleBuildMismatch = string(reason.ModuleBuildMismatch)

// pullFailures are container waiting reasons that mean the kubelet cannot
// get the worker image.
var pullFailures = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true,
	"ErrImageNeverPull": true, "RegistryUnavailable": true, "SignatureValidationFailed": true,
}

// configFailures are waiting reasons that mean the Pod cannot start at all.
var configFailures = map[string]bool{
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// diagnosis is what a worker Pod's status says about progress.
type diagnosis struct {
	failing  bool   // the worker cannot make progress as it is
	reason   string // condition reason when failing or stuck
	message  string
	stuck    bool // running or pending past the stuck timeout
	restarts int32
}

// diagnose reads a worker Pod's status. KMM only looks at the worker's
// restart count and so never notices a Pod that cannot pull its image or
// is stuck; this reads waiting reasons, the last termination message
// (the worker's error, via FallbackToLogsOnError) and the Pod's age.
func diagnose(pod *corev1.Pod, now time.Time, stuckAfter time.Duration) diagnosis {
	var d diagnosis
	what := fmt.Sprintf("worker pod %s/%s", pod.Namespace, pod.Name)
	if pod.Status.Phase == corev1.PodFailed {
		d.failing, d.reason = true, ReasonPodFailed
		d.message = fmt.Sprintf("%s failed: %s", what, firstNonEmpty(pod.Status.Message, pod.Status.Reason, "no reason given"))
		return d
	}
	for _, cs := range pod.Status.ContainerStatuses {
		d.restarts += cs.RestartCount
		if w := cs.State.Waiting; w != nil {
			switch {
			case pullFailures[w.Reason]:
				d.failing, d.reason = true, ReasonImagePull
				d.message = fmt.Sprintf("%s cannot pull %s: %s: %s", what, cs.Image, w.Reason, w.Message)
				return d
			case configFailures[w.Reason]:
				d.failing, d.reason = true, ReasonWorkerFailed
				d.message = fmt.Sprintf("%s cannot start: %s: %s", what, w.Reason, w.Message)
				return d
			}
		}
		if t := cs.LastTerminationState.Terminated; t != nil && t.ExitCode != 0 {
			d.failing = true
			d.reason, d.message = workerFailure(pod, t.Message,
				fmt.Sprintf("%s failed %d time(s), last with exit code %d", what, cs.RestartCount, t.ExitCode))
			return d
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			d.failing = true
			d.reason, d.message = workerFailure(pod, t.Message, fmt.Sprintf("%s exited with code %d", what, t.ExitCode))
			return d
		}
	}
	if stuckAfter > 0 && !pod.CreationTimestamp.IsZero() && now.Sub(pod.CreationTimestamp.Time) > stuckAfter {
		d.stuck, d.reason = true, ReasonWorkerStuck
		d.message = fmt.Sprintf("%s has been %s for %s; pulling or extracting the kmod image may be stuck",
			what, firstNonEmpty(string(pod.Status.Phase), "Pending"), now.Sub(pod.CreationTimestamp.Time).Round(time.Second))
	}
	return d
}

// workerReasons are the reasons a worker's last line may carry
// (reason.Tagged) that the loader reports as the node's: the kernel's,
// which a user acts on differently from a failing worker. Each says what
// the retried worker waits for.
var workerReasons = map[reason.Reason]string{
	reason.ModuleInUse:         "retried until the module is no longer in use",
	reason.ModuleBuildMismatch: "retried until the other build is unloaded",
}

// workerFailure is the reason and message of a worker that exited with an
// error (what says how): its termination message's last line, and
// WorkerFailed unless that line is tagged with one of workerReasons. An
// in-use module (or another build loaded) names the node, and says the
// worker is retried: its Pod restarts on failure, so the unload waits for
// the module's users to go (the load, for the other build to go).
func workerFailure(pod *corev1.Pod, termination, what string) (string, string) {
	msg, r := reason.Untagged(lastLine(termination))
	wait, ok := workerReasons[r]
	if !ok {
		return ReasonWorkerFailed, what + ": " + msg
	}
	return string(r), fmt.Sprintf("%s (%s on node %s; %s)", msg, what, pod.Spec.NodeName, wait)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// lastLine returns the last non-empty line of a termination message, which
// is where the worker writes its error.
func lastLine(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return "no message"
}
