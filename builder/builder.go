package builder

import (
	"context"
	"strings"
	"time"

	"github.com/kmmkit/kmmkit/reason"
)

// Builder builds the image of a Request and pushes it to Request.Image.
type Builder interface {
	// Sync starts the build, or reports the one already running for the
	// same request. It is safe to call repeatedly; callers call it until
	// the phase is Succeeded or a final Failed, then check the registry.
	Sync(ctx context.Context, req Request) (Status, error)
}

// Phase is a build's progress.
type Phase string

// Build phases.
const (
	PhasePending   Phase = "Pending"
	PhaseRunning   Phase = "Running"
	PhaseSucceeded Phase = "Succeeded"
	PhaseFailed    Phase = "Failed"
)

// Status is what Sync reports.
type Status struct {
	// Phase is the build's progress.
	Phase Phase
	// Name is the build object (Pod, Build) or local build's name.
	Name string
	// Hash is the request's hash the build runs for.
	Hash string
	// Attempt counts attempts from 1.
	Attempt int
	// Digest is the pushed image's digest, when the backend knows it.
	Digest string
	// Reason classifies a failure with a constant of package reason:
	// BuildFailed, MissingSecret, InvalidRequest, SignFailed, or a
	// registry reason (Unauthorized, …) when pushing failed. Callers
	// compare it with those constants.
	Reason reason.Reason
	// Message explains a failure.
	Message string
	// LogTail holds the last lines of a failed build's log.
	LogTail string
	// Final is set on a failure that will not be retried.
	Final bool
	// RequeueAfter, when not zero, asks the caller to Sync again then (a
	// retry is due, or a successful build is to be collected).
	RequeueAfter time.Duration
}

// RetryPolicy bounds retries of failed builds. KMM never retries a failed
// build pod; kmmkit retries MaxAttempts-1 times with exponential backoff
// and then keeps the last failure.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts; 0 means 3.
	MaxAttempts int
	// Backoff is the wait before the second attempt, doubling each time;
	// 0 means 30 seconds.
	Backoff time.Duration
	// MaxBackoff caps the wait; 0 means 10 minutes.
	MaxBackoff time.Duration
}

// Delay returns the wait before attempt next (2, 3, …).
func (p RetryPolicy) Delay(next int) time.Duration {
	d, maxD := p.Backoff, p.MaxBackoff
	if d <= 0 {
		d = 30 * time.Second
	}
	if maxD <= 0 {
		maxD = 10 * time.Minute
	}
	for i := 2; i < next && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
}

// Attempts returns MaxAttempts with its default.
func (p RetryPolicy) Attempts() int {
	if p.MaxAttempts <= 0 {
		return 3
	}
	return p.MaxAttempts
}

// Labels and annotations of in-cluster build objects (KMM's keys, plus
// the attempt). The label keys are those of the default identity; a
// Request with another Identity uses that identity's (Labels, Selector).
const (
	LabelModuleName   = "kmm.node.kubernetes.io/module.name"
	LabelResourceType = "kmm.node.kubernetes.io/resource-type"
	LabelTargetKernel = "kmm.node.kubernetes.io/target-kernel"
	LabelAttempt      = "kmmkit.io/build-attempt"
	AnnotationHash    = "kmm.node.kubernetes.io/last-hash"
	ResourceBuild     = "BuildImage"
)

// Labels returns the labels of a build object for req: KMM's module
// name, resource type, target kernel and app.kubernetes.io labels for the
// default identity, the same under req.Identity's domain otherwise.
func Labels(req Request) map[string]string {
	return req.owner().BuildLabels(ResourceBuild, req.Kernel.DNSName())
}

// Selector returns the labels that find the build objects of req (its
// owner, the build resource type and the kernel), whatever their hash.
func Selector(req Request) map[string]string {
	return req.owner().BuildSelector(ResourceBuild, req.Kernel.DNSName())
}

// LogTail returns the last n lines of a build log, for Status.LogTail.
func LogTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
