// Package fake is an in-memory registry.ImageChecker for tests: script
// which images exist, which are missing and which fail, then inspect the
// requests that were made.
package fake

import (
	"context"
	"sync"
	"time"

	"github.com/kmmkit/kmmkit/registry"
)

// Checker is a scriptable registry.ImageChecker. Images it was told
// nothing about are missing. It is safe for concurrent use.
type Checker struct {
	mu       sync.Mutex
	exists   map[string]string
	errs     map[string]error
	requests []registry.Request
}

var _ registry.ImageChecker = (*Checker)(nil)

// New returns a Checker with no images.
func New() *Checker {
	return &Checker{exists: map[string]string{}, errs: map[string]error{}}
}

// SetExists makes image exist with the given digest.
func (c *Checker) SetExists(image, digest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.errs, image)
	c.exists[image] = digest
}

// SetMissing makes image missing.
func (c *Checker) SetMissing(image string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.errs, image)
	delete(c.exists, image)
}

// SetError makes every check of image fail with err, for example a
// *registry.Error with ReasonUnauthorized.
func (c *Checker) SetError(image string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs[image] = err
}

// Check answers from the script and records the request.
func (c *Checker) Check(ctx context.Context, req registry.Request) (registry.Result, error) {
	if err := ctx.Err(); err != nil {
		return registry.Result{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, req)
	if err, ok := c.errs[req.Image]; ok {
		return registry.Result{}, err
	}
	res := registry.Result{CheckedAt: time.Now()}
	if d, ok := c.exists[req.Image]; ok {
		res.Exists, res.Digest = true, d
	} else {
		res.Missing = "manifest unknown"
	}
	return res, nil
}

// Verify is Check: the fake has no cache.
func (c *Checker) Verify(ctx context.Context, req registry.Request) (registry.Result, error) {
	return c.Check(ctx, req)
}

// Requests returns the requests made so far, in order.
func (c *Checker) Requests() []registry.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]registry.Request(nil), c.requests...)
}
