package kmm

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// maxLinted bounds the lint results a Reconciler remembers.
const maxLinted = 4096

// imageLint is the opt-in lint of existing images (WithImageLint).
type imageLint struct {
	client *registry.Client
	opts   []lint.Option
}

// lintResult is the remembered lint of one digest for one kernel.
type lintResult struct {
	ok      bool
	summary string
}

// WithImageLint makes the Reconciler lint each kernel's image once it is
// ready (package lint: layout, vermagic, depmod's files, dependencies,
// the Module's modules, firmware, signatures), with the settings of the
// kernel's mapping (lint.FromRecord) and opts, pulling its module tree
// through client (nil: the Reconciler's registry client, WithRegistry or
// its default; with neither, nothing is linted). An image with findings keeps its state Ready — the
// worker still tries it, and a failed load is reported on its nodes — but
// the kernel's status says why it would not load: reason ImageLintFailed
// and the findings, each naming the file and the rule. Each digest is
// linted once per kernel; a lint that cannot run (the registry is
// unreachable) is logged and retried on the next pass. Off by default:
// it pulls every image once.
func WithImageLint(client *registry.Client, opts ...lint.Option) Option {
	return func(o *options) { o.imageLint = &imageLint{client: client, opts: opts} }
}

// lintKernel lints the ready image of rec's kernel at digest and records
// findings on ks.
func (r *Reconciler) lintKernel(ctx context.Context, ks *v1beta1.KernelStatus, rec *kernelmap.Record, auth registry.AuthInfo) {
	if r.imageLint == nil || ks.Digest == "" {
		return
	}
	client := r.imageLint.client
	if client == nil {
		client = r.registry
	}
	if client == nil {
		return
	}
	key := ks.Digest + "\x00" + ks.Kernel
	r.mu.Lock()
	res, ok := r.linted[key]
	r.mu.Unlock()
	if !ok {
		req := registry.Request{Image: rec.Image(), TLS: rec.RegistryTLS(), Auth: auth}
		if ref, err := registry.ParseReference(req.Image, req.TLS); err == nil {
			req.Image = ref.Context().Digest(ks.Digest).String()
		}
		rep, err := lint.Image(ctx, client, req, ks.Kernel, append([]lint.Option{lint.FromRecord(rec)}, r.imageLint.opts...)...)
		if err != nil {
			logr.FromContextOrDiscard(ctx).Info("image not linted", "image", rec.Image(), "kernel", ks.Kernel, "reason", reason.Of(err), "error", err.Error())
			return
		}
		res = lintResult{ok: rep.OK(), summary: rep.Summary(5)}
		r.mu.Lock()
		if len(r.linted) >= maxLinted {
			r.linted = map[string]lintResult{}
		}
		r.linted[key] = res
		r.mu.Unlock()
	}
	if !res.ok {
		ks.Reason = reason.ImageLintFailed
		ks.Message = fmt.Sprintf("image %s (%s) would not load on %s: %s", rec.Image(), ks.Digest, ks.Kernel, res.summary)
	}
}
