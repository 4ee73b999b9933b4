// Package fake holds a scriptable image signer for tests: a
// kmm.ImageSigner that records every request, refuses what
// builder/sign.Signer refuses, fails where told, and calls a hook on
// success (to make the signed image appear in a fake registry, say).
package fake

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kmmkit/kmmkit/builder/sign"
)

// Signer is an in-memory image signer, safe for concurrent use. It has
// the method set of kmm.ImageSigner.
type Signer struct {
	mu       sync.Mutex
	requests []sign.Request
	fail     map[string]error
	onSign   func(sign.Request, sign.Result)
}

// New returns a Signer whose signing succeeds.
func New() *Signer {
	return &Signer{fail: map[string]error{}}
}

// OnSign sets a hook called after each successful signing, with the
// request and the result Sign returns.
func (s *Signer) OnSign(f func(sign.Request, sign.Result)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onSign = f
}

// Fail makes signing into image (the request's To.Image) fail with err;
// nil makes it succeed again. An err that carries a reason (see package
// reason) is reported with it; any other is reported as SignFailed.
func (s *Signer) Fail(image string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.fail, image)
		return
	}
	s.fail[image] = err
}

// Requests returns the signing requests so far, in order, including the
// refused and failed ones.
func (s *Signer) Requests() []sign.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sign.Request(nil), s.requests...)
}

// Sign records req and signs it: the result's digest is a stable hash of
// the final image's name, and Signed lists FilesToSign sorted. Like
// builder/sign.Signer it refuses a request without files to sign or an
// unsigned image, and one whose unsigned and signed images are the same.
func (s *Signer) Sign(ctx context.Context, req sign.Request) (sign.Result, error) {
	if err := ctx.Err(); err != nil {
		return sign.Result{}, err
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	err := s.fail[req.To.Image]
	hook := s.onSign
	s.mu.Unlock()
	switch {
	case err != nil:
		return sign.Result{}, err
	case len(req.FilesToSign) == 0:
		return sign.Result{}, errors.New("sign: filesToSign is empty")
	case req.From.Image == "":
		return sign.Result{}, errors.New("sign: no image to sign given (sign.unsignedImage is empty and nothing was built)")
	case req.From.Image == req.To.Image:
		return sign.Result{}, fmt.Errorf("sign: the unsigned image and the signed image are both %s; unsigned modules must not be published at the final tag", req.To.Image)
	}
	d, _, err := v1.SHA256(strings.NewReader(req.To.Image + "+signed"))
	if err != nil {
		return sign.Result{}, err
	}
	files := append([]string(nil), req.FilesToSign...)
	sort.Strings(files)
	res := sign.Result{Digest: d.String(), Signed: files}
	if hook != nil {
		hook(req, res)
	}
	return res, nil
}
