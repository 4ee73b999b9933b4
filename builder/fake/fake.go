// Package fake holds a scriptable builder.Builder for tests: builds take
// a given number of Sync passes, fail where told, and call a hook on
// success (to make the image appear in a fake registry, say). It records
// every build it started.
package fake

import (
	"context"
	"sync"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/reason"
)

// Builder is an in-memory builder.Builder, safe for concurrent use. Like
// an in-cluster backend with no GC delay, a successful build is forgotten
// once its success has been reported: a later Sync for the same image
// (after the image vanished from the registry, say) starts a new build.
type Builder struct {
	mu        sync.Mutex
	passes    int
	builds    map[string]*build // by image
	fail      map[string]builder.Status
	started   []builder.Request
	onSucceed func(builder.Request)
}

type build struct {
	hash     string
	attempt  int
	progress int
	failed   bool
}

var _ builder.Builder = (*Builder)(nil)

// New returns a Builder whose builds succeed on the first Sync after the
// one that started them.
func New() *Builder {
	return &Builder{passes: 1, builds: map[string]*build{}, fail: map[string]builder.Status{}}
}

// SetPasses sets how many further Syncs a build runs before it finishes
// (0: it finishes in the Sync that starts it).
func (b *Builder) SetPasses(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.passes = n
}

// OnSucceed sets a hook called once for each successful build.
func (b *Builder) OnSucceed(f func(builder.Request)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onSucceed = f
}

// Fail makes builds of image fail with r (reason.BuildFailed,
// reason.MissingSecret, …), message and log tail, finally (no retries),
// until Recover.
func (b *Builder) Fail(image string, r reason.Reason, message, logTail string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail[image] = builder.Status{Phase: builder.PhaseFailed, Reason: r, Message: message, LogTail: logTail, Final: true}
}

// Recover undoes Fail; the next Sync starts a new attempt.
func (b *Builder) Recover(image string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.fail, image)
	if bl, ok := b.builds[image]; ok && bl.failed {
		delete(b.builds, image)
	}
}

// Started returns the requests of every build started, in order.
func (b *Builder) Started() []builder.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]builder.Request(nil), b.started...)
}

// Sync implements builder.Builder.
func (b *Builder) Sync(ctx context.Context, req builder.Request) (builder.Status, error) {
	if err := ctx.Err(); err != nil {
		return builder.Status{}, err
	}
	if err := req.Validate(); err != nil {
		return builder.Status{Phase: builder.PhaseFailed, Final: true, Reason: reason.InvalidRequest, Message: err.Error()}, err
	}
	b.mu.Lock()
	hash := req.Hash()
	bl, ok := b.builds[req.Image]
	attempt := 1
	if ok && bl.hash != hash {
		ok = false
	}
	if !ok {
		if bl != nil {
			attempt = bl.attempt + 1
		}
		bl = &build{hash: hash, attempt: attempt}
		b.builds[req.Image] = bl
		b.started = append(b.started, req)
	}
	st := builder.Status{Name: req.Name(bl.attempt), Hash: hash, Attempt: bl.attempt}
	if f, failing := b.fail[req.Image]; failing {
		bl.failed = true
		f.Name, f.Hash, f.Attempt = st.Name, st.Hash, st.Attempt
		b.mu.Unlock()
		return f, nil
	}
	var hook func(builder.Request)
	switch {
	case bl.progress >= b.passes:
		st.Phase = builder.PhaseSucceeded
		hook = b.onSucceed
	default:
		bl.progress++
		st.Phase = builder.PhaseRunning
	}
	if st.Phase == builder.PhaseSucceeded {
		st.Digest = "sha256:" + hash + hash + hash + hash
		delete(b.builds, req.Image)
	}
	b.mu.Unlock()
	if hook != nil {
		hook(req)
	}
	return st, nil
}
