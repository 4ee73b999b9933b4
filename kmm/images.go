package kmm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// imageWork is the work on one distinct image: checked, built and signed
// once, whatever the number of kernels and nodes that use it.
type imageWork struct {
	image   string
	rec     *kernelmap.Record // of the first kernel that maps to it
	state   v1beta1.KernelState
	reason  reason.Reason
	digest  string
	build   string
	message string
	requeue time.Duration
	done    string // "built" or "signed" when this pass made the image
}

// set records the image's state, reason and message.
func (w *imageWork) set(state v1beta1.KernelState, r reason.Reason, msg string) {
	w.state, w.reason, w.message = state, r, msg
}

// ready records that the image exists with digest.
func (w *imageWork) ready(digest string, verifyEvery time.Duration) {
	w.set(v1beta1.KernelStateReady, reason.ImageReady, "")
	w.digest, w.requeue = digest, verifyEvery
}

// reasonOr returns the reason err carries (reason.Of), or fallback.
func reasonOr(err error, fallback reason.Reason) reason.Reason {
	if r := reason.Of(err); r != "" {
		return r
	}
	return fallback
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
	log := logr.FromContextOrDiscard(ctx).WithValues("image", w.image, "kernel", kernel)
	if err != nil {
		w.set(v1beta1.KernelStateCheckFailed, reasonOr(err, reason.RegistryError), err.Error())
		w.requeue = time.Minute
		log.V(1).Info("image check failed", "reason", w.reason, "error", err.Error())
		return
	}
	if res.Exists {
		w.ready(res.Digest, r.verifyEvery)
		log.V(1).Info("image exists", "digest", res.Digest, "verified", verify)
		return
	}
	b, s := rec.Build(), rec.Sign()
	log.V(1).Info("image does not exist", "missing", res.Missing, "build", b != nil, "sign", s != nil)
	if b == nil && s == nil {
		w.set(v1beta1.KernelStateMissing, reason.ImageNotFound,
			fmt.Sprintf("image %s does not exist (%s) and the Module defines no build or sign for kernel %s", w.image, res.Missing, kernel))
		w.requeue = time.Minute
		return
	}
	from := registry.Request{Auth: auth}
	if b != nil {
		if r.builder == nil {
			w.set(v1beta1.KernelStateMissing, reason.NoBuilder,
				fmt.Sprintf("image %s does not exist; the Module defines a build, but this reconciler has no builder (kmm.WithBuilder)", w.image))
			w.requeue = time.Minute
			return
		}
		target := w.image
		if s != nil {
			if target, err = sign.IntermediateTag(w.image); err != nil {
				w.set(v1beta1.KernelStateBuildFailed, reason.InvalidReference, err.Error())
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
				w.ready(res.Digest, r.verifyEvery)
				w.done = "built"
			} else {
				w.set(v1beta1.KernelStateBuilding, reason.Building,
					fmt.Sprintf("build %s succeeded; waiting for %s to appear in the registry", w.build, w.image))
				w.requeue = 5 * time.Second
			}
			return
		}
		r.invalidate(target)
	} else {
		if s.UnsignedImage == "" {
			w.set(v1beta1.KernelStateSignFailed, reason.InvalidRequest,
				"sign: no image to sign given (sign.unsignedImage is empty and the Module defines no build)")
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
		w.set(v1beta1.KernelStateBuildFailed, reasonOr(err, reason.InvalidRequest), err.Error())
		return false
	}
	req.Image, req.Owner, req.Identity = target, obj.Owner, r.identity
	if err := req.ResolveDTK(ctx, r.dtk); err != nil {
		w.set(v1beta1.KernelStateBuildFailed, reasonOr(err, reason.InvalidRequest), err.Error())
		return false
	}
	st, err := r.builder.Sync(ctx, req)
	r.metrics.build(st)
	w.build = st.Name
	logr.FromContextOrDiscard(ctx).V(1).Info("build synced", "image", target, "kernel", rec.Kernel().Version,
		"build", st.Name, "phase", st.Phase, "attempt", st.Attempt, "reason", st.Reason)
	switch {
	case st.Phase == builder.PhaseSucceeded:
		return true
	case st.Phase == builder.PhaseFailed || err != nil:
		w.state, w.reason, w.requeue = v1beta1.KernelStateBuildFailed, st.Reason, st.RequeueAfter
		if w.reason == "" {
			w.reason = reasonOr(err, reason.BuildFailed)
		}
		msg := st.Message
		if msg == "" && err != nil {
			msg = err.Error()
		}
		if dfErr != nil && st.Reason == reason.InvalidRequest {
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
		w.set(v1beta1.KernelStateBuilding, reason.Building,
			fmt.Sprintf("build %s of %s is %s", st.Name, target, strings.ToLower(string(st.Phase))))
		w.requeue = 10 * time.Second
		if st.RequeueAfter > 0 {
			w.requeue = st.RequeueAfter
		}
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
			w.set(v1beta1.KernelStateSignFailed, last.reason,
				fmt.Sprintf("%s (retrying at %s)", last.msg, last.at.Add(r.signBackoff).UTC().Format(time.RFC3339)))
			w.requeue = left
			return
		}
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("image", w.image, "kernel", w.rec.Kernel().Version)
	fail := func(err error, why reason.Reason) {
		r.mu.Lock()
		r.signFailed[w.image] = failure{at: r.now(), msg: err.Error(), reason: why}
		r.mu.Unlock()
		w.set(v1beta1.KernelStateSignFailed, why, fmt.Sprintf("%s (retrying at %s)", err, r.at(r.signBackoff)))
		w.requeue = r.signBackoff
		log.V(1).Info("signing failed", "reason", why, "error", err.Error())
	}
	key, cert, err := sign.KeysFromSecrets(ctx, r.client, obj.podNamespace(), w.rec.Sign())
	if err != nil {
		why := reasonOr(err, reason.SignFailed)
		if apierrors.IsNotFound(err) {
			why = reason.MissingSecret
		}
		fail(err, why)
		return
	}
	res, err := r.signer.Sign(ctx, sign.Request{From: from, To: final, FilesToSign: files, Key: key, Cert: cert})
	if err != nil {
		fail(err, reasonOr(err, reason.SignFailed))
		return
	}
	r.mu.Lock()
	delete(r.signFailed, w.image)
	r.mu.Unlock()
	r.invalidate(w.image)
	w.ready(res.Digest, r.verifyEvery)
	w.done = "signed"
	log.V(1).Info("signed", "from", from.Image, "digest", res.Digest)
}

// at formats the time d from now, to the second, for messages that must
// not change from one pass to the next (a changing message is a status
// write and an event each pass).
func (r *Reconciler) at(d time.Duration) string {
	return r.now().Add(d).UTC().Format(time.RFC3339)
}
