package kmm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/registry"
)

// Image states, as KernelStatus.State reports them.
const (
	StateReady       = "Ready"
	StateMissing     = "Missing"
	StateBuilding    = "Building"
	StateBuildFailed = "BuildFailed"
	StateSignFailed  = "SignFailed"
	StateCheckFailed = "CheckFailed"
	StateNoMapping   = "NoMapping"
	StateMapFailed   = "MappingFailed"
)

// imageWork is the work on one distinct image: checked, built and signed
// once, whatever the number of kernels and nodes that use it.
type imageWork struct {
	image   string
	rec     *kernelmap.Record // of the first kernel that maps to it
	state   string
	digest  string
	build   string
	message string
	requeue time.Duration
	done    string // "built" or "signed" when this pass made the image
}

// invalidator is a checker with a cache that can be dropped.
type invalidator interface{ Invalidate(image string) }

func (r *Reconciler) invalidate(image string) {
	if inv, ok := r.checker.(invalidator); ok {
		inv.Invalidate(image)
	}
}

// ensureImage brings one image to Ready: check; when missing, build
// (to an intermediate tag when it is to be signed), then sign; or report
// why it cannot.
func (r *Reconciler) ensureImage(ctx context.Context, obj Object, w *imageWork, auth registry.AuthInfo, verify bool) {
	rec := w.rec
	kernel := rec.Kernel().Version
	final := registry.Request{Image: w.image, TLS: rec.RegistryTLS(), Auth: auth}
	res, err := r.check(ctx, final, verify)
	if err != nil {
		w.state, w.message, w.requeue = StateCheckFailed, err.Error(), time.Minute
		return
	}
	if res.Exists {
		w.state, w.digest, w.requeue = StateReady, res.Digest, r.verifyEvery
		return
	}
	b, s := rec.Build(), rec.Sign()
	if b == nil && s == nil {
		w.state, w.requeue = StateMissing, time.Minute
		w.message = fmt.Sprintf("image %s does not exist (%s) and the Module defines no build or sign for kernel %s", w.image, res.Missing, kernel)
		return
	}
	from := registry.Request{Auth: auth}
	if b != nil {
		if r.builder == nil {
			w.state, w.requeue = StateMissing, time.Minute
			w.message = fmt.Sprintf("image %s does not exist; the Module defines a build, but this reconciler has no builder", w.image)
			return
		}
		target := w.image
		if s != nil {
			if target, err = sign.IntermediateTag(w.image); err != nil {
				w.state, w.message = StateBuildFailed, err.Error()
				return
			}
			from.Image, from.TLS = target, rec.RegistryTLS()
			// An unsigned build already pushed is signed, never rebuilt:
			// KMM's build/sign loop cannot happen.
			if ir, err := r.check(ctx, from, false); err == nil && ir.Exists {
				r.signImage(ctx, obj, w, from, final, s.FilesToSign)
				return
			}
		}
		if !r.buildImage(ctx, obj, w, target) {
			return
		}
		if s == nil {
			r.invalidate(w.image)
			if res, err := r.checker.Verify(ctx, final); err == nil && res.Exists {
				w.state, w.digest, w.requeue, w.done = StateReady, res.Digest, r.verifyEvery, "built"
			} else {
				w.state, w.requeue = StateBuilding, 5*time.Second
				w.message = fmt.Sprintf("build %s succeeded; waiting for %s to appear in the registry", w.build, w.image)
			}
			return
		}
		r.invalidate(target)
	} else {
		if s.UnsignedImage == "" {
			w.state, w.message = StateSignFailed, "sign: no image to sign given (sign.unsignedImage is empty and the Module defines no build)"
			return
		}
		from.Image, from.TLS = s.UnsignedImage, s.UnsignedImageRegistryTLS
	}
	r.signImage(ctx, obj, w, from, final, s.FilesToSign)
}

func (r *Reconciler) check(ctx context.Context, req registry.Request, verify bool) (registry.Result, error) {
	var res registry.Result
	var err error
	if verify {
		res, err = r.checker.Verify(ctx, req)
	} else {
		res, err = r.checker.Check(ctx, req)
	}
	r.metrics.imageCheck(res, err)
	return res, err
}

// buildImage runs one Sync of the build of w to target; it reports
// whether the build has succeeded.
func (r *Reconciler) buildImage(ctx context.Context, obj Object, w *imageWork, target string) bool {
	rec := w.rec
	dockerfile, dfErr := r.dockerfile(ctx, obj.podNamespace(), rec)
	req, err := builder.NewRequest(rec, dockerfile)
	if err != nil {
		w.state, w.message = StateBuildFailed, err.Error()
		return false
	}
	req.Image, req.Owner, req.Identity = target, obj.Owner, r.identity
	if err := req.ResolveDTK(ctx, r.dtk); err != nil {
		w.state, w.message = StateBuildFailed, err.Error()
		return false
	}
	st, err := r.builder.Sync(ctx, req)
	r.metrics.build(st)
	w.build = st.Name
	switch {
	case st.Phase == builder.PhaseSucceeded:
		return true
	case st.Phase == builder.PhaseFailed || err != nil:
		w.state, w.requeue = StateBuildFailed, st.RequeueAfter
		msg := st.Message
		if msg == "" && err != nil {
			msg = err.Error()
		}
		if dfErr != nil && st.Reason == "InvalidRequest" {
			msg = dfErr.Error()
		}
		if st.LogTail != "" {
			lines := strings.Split(strings.TrimSpace(st.LogTail), "\n")
			msg += "; log: " + lines[len(lines)-1]
		}
		if !st.Final && st.RequeueAfter > 0 {
			msg += " (retrying at " + r.at(st.RequeueAfter) + ")"
		}
		w.message = fmt.Sprintf("build %s of %s failed: %s", st.Name, target, msg)
	default:
		w.state, w.requeue = StateBuilding, 10*time.Second
		if st.RequeueAfter > 0 {
			w.requeue = st.RequeueAfter
		}
		w.message = fmt.Sprintf("build %s of %s is %s", st.Name, target, strings.ToLower(string(st.Phase)))
	}
	return false
}

// dockerfile reads the build's Dockerfile ConfigMap. A missing one is
// returned as an error but does not stop builders that need no
// Dockerfile (the assembler).
func (r *Reconciler) dockerfile(ctx context.Context, ns string, rec *kernelmap.Record) (string, error) {
	b := rec.Build()
	if b == nil || b.DockerfileConfigMap == nil || b.DockerfileConfigMap.Name == "" {
		return "", errors.New("build.dockerfileConfigMap is not set")
	}
	cm, err := r.client.CoreV1().ConfigMaps(ns).Get(ctx, b.DockerfileConfigMap.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("build.dockerfileConfigMap %s/%s does not exist", ns, b.DockerfileConfigMap.Name)
	}
	if err != nil {
		return "", fmt.Errorf("reading build.dockerfileConfigMap %s/%s: %w", ns, b.DockerfileConfigMap.Name, err)
	}
	return builder.DockerfileFromConfigMap(cm)
}

// signImage signs from into final, with a backoff after a failure.
func (r *Reconciler) signImage(ctx context.Context, obj Object, w *imageWork, from, final registry.Request, files []string) {
	r.mu.Lock()
	last, failed := r.signFailed[w.image]
	r.mu.Unlock()
	if failed {
		if left := last.at.Add(r.signBackoff).Sub(r.now()); left > 0 {
			w.state, w.requeue = StateSignFailed, left
			w.message = fmt.Sprintf("%s (retrying at %s)", last.msg, last.at.Add(r.signBackoff).UTC().Format(time.RFC3339))
			return
		}
	}
	fail := func(err error) {
		r.mu.Lock()
		r.signFailed[w.image] = failure{at: r.now(), msg: err.Error()}
		r.mu.Unlock()
		w.state, w.requeue = StateSignFailed, r.signBackoff
		w.message = fmt.Sprintf("%s (retrying at %s)", err, r.at(r.signBackoff))
	}
	key, cert, err := sign.KeysFromSecrets(ctx, r.client, obj.podNamespace(), w.rec.Sign())
	if err != nil {
		fail(err)
		return
	}
	res, err := r.signer.Sign(ctx, sign.Request{From: from, To: final, FilesToSign: files, Key: key, Cert: cert})
	if err != nil {
		fail(err)
		return
	}
	r.mu.Lock()
	delete(r.signFailed, w.image)
	r.mu.Unlock()
	r.invalidate(w.image)
	w.state, w.digest, w.requeue, w.message, w.done = StateReady, res.Digest, r.verifyEvery, "", "signed"
}

// at formats the time d from now, to the second, for messages that must
// not change from one pass to the next (a changing message is a status
// write and an event each pass).
func (r *Reconciler) at(d time.Duration) string {
	return r.now().Add(d).UTC().Format(time.RFC3339)
}
