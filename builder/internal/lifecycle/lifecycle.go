// Package lifecycle is the life cycle that in-cluster builders share:
// find the build objects of a request, replace stale ones, start the
// next attempt after a failure with backoff, and collect successful ones
// after a delay. Backends supply a Store for their object kind.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/reason"
)

// Object is a build object as the life cycle sees it.
type Object struct {
	Name     string
	Hash     string
	Attempt  int
	Phase    builder.Phase
	Created  time.Time
	Finished time.Time
	Deleting bool
	Digest   string
	Reason   reason.Reason
	Message  string
	LogTail  string
}

// ErrExists is returned by Store.Create when the name is taken (an old
// object is still going away).
var ErrExists = errors.New("build object exists")

// Store reads and writes a backend's build objects.
type Store interface {
	// List returns the build objects of req's module and kernel.
	List(ctx context.Context, req builder.Request) ([]Object, error)
	// Create starts attempt of req under name.
	Create(ctx context.Context, req builder.Request, name string, attempt int) error
	// Delete removes the named object.
	Delete(ctx context.Context, req builder.Request, name string) error
}

// LogReader is a Store that can read a failed build's log when the
// object itself carries no log tail. Sync asks only for the failure it
// reports, so listing stays free of per-object log reads.
type LogReader interface {
	LogTail(ctx context.Context, req builder.Request, name string) string
}

// Publisher is a Store whose builds push to a staging tag
// (publish.StagingTag): Publish lints what a succeeded build pushed and,
// when it would load, tags it at the request's image, returning the
// digest (package builder/publish). Findings (reason.ImageLintFailed)
// fail the build finally, and the object stays to say why; another error
// leaves the build running, to publish on a later pass.
type Publisher interface {
	Publish(ctx context.Context, req builder.Request, obj Object) (digest string, err error)
}

// publishRetry is the wait before publishing again after an error that
// is not a finding (the registry could not be reached, say).
const publishRetry = 30 * time.Second

// Options tune Sync.
type Options struct {
	Retry   builder.RetryPolicy
	GCDelay time.Duration
	// Clock is read for backoff and collection; nil means the real one.
	Clock clock.PassiveClock
	// Log is the logger of this pass.
	Log logr.Logger
}

// Sync makes one pass of the life cycle for req.
func Sync(ctx context.Context, s Store, req builder.Request, o Options) (builder.Status, error) {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if err := errors.Join(req.Validate(), req.ValidateDockerfile()); err != nil {
		return builder.Status{Phase: builder.PhaseFailed, Final: true, Reason: reason.InvalidRequest, Message: err.Error()}, err
	}
	hash := req.Hash()
	objs, err := s.List(ctx, req)
	if err != nil {
		return builder.Status{}, fmt.Errorf("listing builds of %s/%s for kernel %s: %w", req.Namespace, req.Module, req.Kernel.Version, err)
	}
	var current []Object
	var errs []error
	for _, obj := range objs {
		if obj.Hash == hash {
			current = append(current, obj)
			continue
		}
		if !obj.Deleting {
			o.Log.Info("replacing stale build", "build", obj.Name, "hash", obj.Hash, "want", hash)
			if err := s.Delete(ctx, req, obj.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	sort.Slice(current, func(i, j int) bool { return current[i].Attempt > current[j].Attempt })
	st := builder.Status{Hash: hash}
	if len(current) == 0 {
		return start(ctx, s, req, 1, st, errs)
	}
	cur := current[0]
	st.Name, st.Attempt, st.Digest = cur.Name, cur.Attempt, cur.Digest
	now := o.Clock.Now()
	switch {
	case cur.Deleting:
		st.Phase, st.RequeueAfter = builder.PhasePending, 2*time.Second
		st.Message = fmt.Sprintf("waiting for build %s to be removed", cur.Name)
	case cur.Phase == builder.PhaseSucceeded:
		if p, ok := s.(Publisher); ok {
			digest, err := p.Publish(ctx, req, cur)
			switch {
			case reason.Of(err) == reason.ImageLintFailed:
				// The same Dockerfile builds the same image: no retry,
				// and the object is kept.
				st.Phase, st.Reason, st.Final = builder.PhaseFailed, reason.ImageLintFailed, true
				st.Message = fmt.Sprintf("build %s pushed an image that would not load, so it was not published: %v", cur.Name, err)
				return st, errors.Join(errs...)
			case err != nil:
				o.Log.Info("cannot publish the built image yet", "build", cur.Name, "error", err.Error())
				st.Phase, st.RequeueAfter = builder.PhaseRunning, publishRetry
				st.Message = fmt.Sprintf("build %s pushed its image; publishing it: %v", cur.Name, err)
				return st, errors.Join(errs...)
			}
			st.Digest = digest
		}
		st.Phase = builder.PhaseSucceeded
		done := cur.Finished
		if done.IsZero() {
			done = cur.Created
		}
		if left := done.Add(o.GCDelay).Sub(now); left > 0 {
			st.RequeueAfter = left
		} else if err := s.Delete(ctx, req, cur.Name); err != nil {
			errs = append(errs, err)
		}
	case cur.Phase == builder.PhaseFailed:
		st.Phase, st.Reason, st.Message, st.LogTail = builder.PhaseFailed, cur.Reason, cur.Message, cur.LogTail
		if lr, ok := s.(LogReader); ok && st.LogTail == "" {
			st.LogTail = lr.LogTail(ctx, req, cur.Name)
		}
		if cur.Attempt >= o.Retry.Attempts() {
			st.Final = true
			st.Message = fmt.Sprintf("%s (attempt %d of %d; no more retries: fix the build, or delete build %s to start over)",
				cur.Message, cur.Attempt, o.Retry.Attempts(), cur.Name)
			break
		}
		done := cur.Finished
		if done.IsZero() {
			done = cur.Created
		}
		due := done.Add(o.Retry.Delay(cur.Attempt + 1))
		if now.Before(due) {
			st.RequeueAfter = due.Sub(now)
			break
		}
		o.Log.Info("retrying failed build", "build", cur.Name, "attempt", cur.Attempt+1)
		return start(ctx, s, req, cur.Attempt+1, st, errs)
	default:
		st.Phase = cur.Phase
	}
	return st, errors.Join(errs...)
}

func start(ctx context.Context, s Store, req builder.Request, attempt int, st builder.Status, errs []error) (builder.Status, error) {
	name := req.Name(attempt)
	st.Name, st.Attempt, st.Phase = name, attempt, builder.PhasePending
	st.Reason, st.Message, st.LogTail, st.Digest = "", "", "", ""
	err := s.Create(ctx, req, name, attempt)
	switch {
	case errors.Is(err, ErrExists):
		st.RequeueAfter = 2 * time.Second
		st.Message = fmt.Sprintf("waiting for the old build %s to be removed", name)
	case err != nil:
		errs = append(errs, fmt.Errorf("starting build %s: %w", name, err))
	}
	return st, errors.Join(errs...)
}
