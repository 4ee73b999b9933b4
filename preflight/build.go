package preflight

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// make builds the missing image (to the intermediate tag when it is to be
// signed), signs it, pushes it and lints it, as the Reconciler would when
// a node runs the kernel.
func (k *check) make(ctx context.Context) {
	s := k.rec.Sign()
	from := registry.Request{Auth: k.final.Auth}
	if k.rec.Build() != nil {
		target := k.final.Image
		if s != nil {
			var err error
			if target, err = sign.IntermediateTag(k.final.Image); err != nil {
				k.set(Fails, reason.InvalidReference, "%v", err)
				return
			}
			from.Image, from.TLS = target, k.final.TLS
		}
		// An unsigned build already pushed is signed, not rebuilt.
		if s == nil || !k.exists(ctx, from) {
			if !k.build(ctx, target) {
				return
			}
		}
		if s == nil {
			k.pushed(ctx, "built")
			return
		}
	} else {
		from = k.request(s.UnsignedImage, s.UnsignedImageRegistryTLS, k.final.Auth)
	}
	_, err := k.c.signer.Sign(ctx, sign.Request{From: from, To: k.final, FilesToSign: s.FilesToSign, Key: k.key, Cert: k.cert})
	if err != nil {
		k.failErr(err, reason.SignFailed, "signing %s into %s", from.Image, k.final.Image)
		return
	}
	k.pushed(ctx, "signed")
}

// exists reports whether the registry has req's image.
func (k *check) exists(ctx context.Context, req registry.Request) bool {
	found, err := k.c.reg.Verify(ctx, req)
	return err == nil && found.Exists
}

// pushed checks the image the build or the signing pushed, and lints it.
func (k *check) pushed(ctx context.Context, how string) {
	k.c.reg.Invalidate(k.final.Image)
	found, err := k.c.reg.Verify(ctx, k.final)
	switch {
	case err != nil:
		k.failErr(err, reason.RegistryError, "image %s was %s, but checking it", k.final.Image, how)
		return
	case !found.Exists:
		k.set(Fails, reason.ImageNotFound, "image %s was %s, but the registry does not have it (%s)", k.final.Image, how, found.Missing)
		return
	}
	k.res.Built = true
	k.ready(ctx, found.Digest, "was "+how+" and pushed")
}

// build runs the build to target until it succeeds or fails, within the
// Checker's build timeout; it reports whether it succeeded.
func (k *check) build(ctx context.Context, target string) bool {
	req, err := builder.NewRequest(k.rec, k.dockerfile)
	if err == nil {
		req.Image, req.Identity = target, k.c.identity
		err = builder.FillSecretVersions(ctx, k.c.client, &req)
	}
	if err != nil {
		k.failErr(readErr(err), reason.InvalidRequest, "build of %s", target)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, k.c.timeout)
	defer cancel()
	log := logr.FromContextOrDiscard(ctx).WithValues("image", target, "kernel", k.res.Kernel)
	for {
		st, err := k.c.builder.Sync(ctx, req)
		log.V(1).Info("build synced", "build", st.Name, "phase", st.Phase, "attempt", st.Attempt, "reason", st.Reason)
		switch {
		case st.Phase == builder.PhaseSucceeded:
			return true
		case st.Phase == builder.PhaseFailed || (err != nil && st.Phase == ""):
			r := st.Reason
			if r == "" {
				r = reason.Of(err)
			}
			if r == "" {
				r = reason.BuildFailed
			}
			msg := st.Message
			if msg == "" && err != nil {
				msg = err.Error()
			}
			if k.dfErr != nil && r == reason.InvalidRequest {
				msg = k.dfErr.Error()
			}
			if st.LogTail != "" {
				lines := strings.Split(strings.TrimSpace(st.LogTail), "\n")
				msg += "; log: " + lines[len(lines)-1]
			}
			v := Fails
			if r == reason.RegistryUnavailable {
				v = Unknown
			}
			k.set(v, r, "build %s of %s failed: %s", st.Name, target, msg)
			return false
		}
		wait := st.RequeueAfter
		if wait <= 0 || wait > k.c.poll {
			wait = k.c.poll
		}
		select {
		case <-ctx.Done():
			k.set(Fails, reason.BuildFailed, "build %s of %s did not finish within %s (it is %s)", st.Name, target, k.c.timeout, strings.ToLower(string(st.Phase)))
			return false
		case <-time.After(wait):
		}
	}
}

// String describes a result on one line, for logs.
func (r Result) String() string {
	return fmt.Sprintf("%s on %s: %s %s: %s", r.Object(), r.Kernel, r.Verdict, r.Reason, r.Message)
}
