package preflight

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// check is one Module on one kernel.
type check struct {
	c   *Checker
	m   Module
	res *Result
	rec *kernelmap.Record
	// final is the image nodes pull, with its credentials and TLS.
	final registry.Request
	// dockerfile is the build's Dockerfile, dfErr why it could not be
	// read; key and cert are the signing secrets.
	dockerfile string
	dfErr      error
	key, cert  []byte
}

// set records the verdict.
func (k *check) set(v Verdict, r reason.Reason, format string, args ...any) {
	k.res.Verdict, k.res.Reason, k.res.Message = v, r, fmt.Sprintf(format, args...)
}

// failErr records err: its reason (or fallback), and the verdict that
// reason gives — Unknown when a registry or the API server could not
// answer, Fails otherwise.
func (k *check) failErr(err error, fallback reason.Reason, format string, args ...any) {
	r := reason.Of(err)
	if r == "" {
		r = fallback
	}
	v := Fails
	switch r {
	case reason.RegistryUnavailable, reason.RegistryError, reason.LocalIOError, reason.ReadFailed:
		v = Unknown
	}
	k.set(v, r, "%s: %v", fmt.Sprintf(format, args...), err)
}

// Check says whether m works on kernel. It never fails: what it cannot
// learn is a Result with Verdict Unknown.
func (c *Checker) Check(ctx context.Context, m Module, kernel string) Result {
	res := Result{Namespace: m.Namespace, Name: m.Name, Kernel: kernel}
	k := &check{c: c, m: m, res: &res}
	k.run(ctx)
	logr.FromContextOrDiscard(ctx).V(1).Info("preflight", "module", res.Object(), "kernel", kernel, "verdict", res.Verdict, "reason", res.Reason)
	return res
}

func (k *check) run(ctx context.Context) {
	if errs := v1beta1.ValidateSpec(&k.m.Spec, field.NewPath("spec")); len(errs) > 0 {
		k.set(Fails, reason.InvalidSpec, "the Module is invalid: %v", errs.ToAggregate())
		return
	}
	rec, err := k.c.mapper.ResolveSpec(k.m.Name, k.m.Namespace, &k.m.Spec, k.res.Kernel)
	switch {
	case errors.Is(err, kernelmap.ErrNoMapping) || errors.Is(err, kernelmap.ErrNoModuleLoader):
		k.set(Fails, reason.NoMapping, "no kernel mapping of Module %s matches kernel %s (%s): nodes that boot it get no module; add a mapping or widen a regexp",
			k.res.Object(), k.res.Kernel, k.mappings())
		return
	case err != nil:
		k.set(Fails, reason.MappingFailed, "kernel mapping for %s: %v", k.res.Kernel, err)
		return
	}
	k.rec = rec
	km := k.m.Spec.ModuleLoader.Container.KernelMappings[rec.MappingIndex()]
	k.res.Mapping = &Mapping{Index: rec.MappingIndex(), Literal: km.Literal, Regexp: km.Regexp}
	k.res.Image, k.res.Build, k.res.Sign = rec.Image(), rec.Build() != nil, rec.Sign() != nil
	auth, err := k.c.Credentials(ctx, k.m.Namespace, rec.ImageRepoSecret())
	if err != nil {
		k.failErr(readErr(err), reason.Unauthorized, "pull secret")
		return
	}
	k.final = k.request(rec.Image(), rec.RegistryTLS(), auth)
	found, err := k.c.reg.Verify(ctx, k.final)
	if err != nil {
		k.failErr(err, reason.RegistryError, "checking image %s", k.final.Image)
		return
	}
	if found.Exists {
		k.ready(ctx, found.Digest, "exists")
		return
	}
	if rec.Build() == nil && rec.Sign() == nil {
		k.set(Fails, reason.ImageNotFound, "image %s does not exist (%s) and %s defines no build or sign for kernel %s",
			k.final.Image, found.Missing, k.res.Mapping, k.res.Kernel)
		return
	}
	if !k.inputs(ctx) {
		return
	}
	if k.c.builder == nil {
		k.set(Works, reason.ImageBuildable, "image %s does not exist yet; %s: the Reconciler makes it when a node runs %s (kmm preflight --build makes it now)",
			k.final.Image, k.plan(), k.res.Kernel)
		return
	}
	k.make(ctx)
}

// mappings describes the Module's kernel mappings for a NoMapping
// message.
func (k *check) mappings() string {
	if k.m.Spec.ModuleLoader == nil || len(k.m.Spec.ModuleLoader.Container.KernelMappings) == 0 {
		return "it has none"
	}
	var parts []string
	for i, km := range k.m.Spec.ModuleLoader.Container.KernelMappings {
		parts = append(parts, (&Mapping{Index: i, Literal: km.Literal, Regexp: km.Regexp}).String())
	}
	return "it has " + strings.Join(parts, ", ")
}

// request is a registry request with the Checker's platform and TLS.
func (k *check) request(image string, tls v1beta1.TLSOptions, auth registry.AuthInfo) registry.Request {
	tls.Insecure = tls.Insecure || k.c.tls.Insecure
	tls.InsecureSkipTLSVerify = tls.InsecureSkipTLSVerify || k.c.tls.InsecureSkipTLSVerify
	return registry.Request{Image: image, Platform: k.c.platform, TLS: tls, Auth: auth}
}

// plan says what will make the image.
func (k *check) plan() string {
	var parts []string
	if b := k.rec.Build(); b != nil {
		p := "its build is ready (Dockerfile ConfigMap " + k.m.Namespace + "/" + b.DockerfileConfigMap.Name
		for _, s := range b.Secrets {
			p += ", secret " + k.m.Namespace + "/" + s.Name
		}
		parts = append(parts, p+")")
	}
	if s := k.rec.Sign(); s != nil {
		p := "its signing is ready (key " + k.m.Namespace + "/" + s.KeySecret.Name + ", certificate " + k.m.Namespace + "/" + s.CertSecret.Name
		if k.rec.Build() == nil {
			p += ", unsigned image " + s.UnsignedImage
		}
		parts = append(parts, p+")")
	}
	return strings.Join(parts, " and ")
}

// readErr gives an error from the API server that is not a definite
// answer (not found, forbidden…) the reason ReadFailed.
func readErr(err error) error {
	var st apierrors.APIStatus
	if reason.Of(err) != "" || (errors.As(err, &st) && !apierrors.IsInternalError(err) && !apierrors.IsServerTimeout(err) &&
		!apierrors.IsTimeout(err) && !apierrors.IsServiceUnavailable(err) && !apierrors.IsTooManyRequests(err)) {
		return err
	}
	return &readError{err}
}

// readError is a failed read of the API server.
type readError struct{ err error }

func (e *readError) Error() string           { return e.err.Error() }
func (e *readError) Unwrap() error           { return e.err }
func (e *readError) ReasonOf() reason.Reason { return reason.ReadFailed }

// inputs checks what the build and the signing need, and records the
// first that is missing.
func (k *check) inputs(ctx context.Context) bool {
	ns := k.m.Namespace
	if b := k.rec.Build(); b != nil {
		name := b.DockerfileConfigMap.Name
		cm, err := k.c.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			k.dfErr = fmt.Errorf("build.dockerfileConfigMap %s/%s does not exist", ns, name)
		case err != nil:
			k.failErr(readErr(err), reason.ReadFailed, "reading build.dockerfileConfigMap %s/%s", ns, name)
			return false
		default:
			k.dockerfile, k.dfErr = builder.DockerfileFromConfigMap(cm)
		}
		// A builder that needs no Dockerfile (the assembler) says so
		// when it runs; without one, the Reconciler's builder needs it.
		if k.dfErr != nil && k.c.builder == nil {
			k.set(Fails, reason.InvalidRequest, "image %s does not exist and cannot be built for %s: %v", k.final.Image, k.res.Kernel, k.dfErr)
			return false
		}
		req, err := builder.NewRequest(k.rec, k.dockerfile)
		if err == nil {
			err = builder.FillSecretVersions(ctx, k.c.client, &req)
		}
		switch {
		case apierrors.IsNotFound(err):
			k.set(Fails, reason.MissingSecret, "image %s does not exist and cannot be built for %s: %v", k.final.Image, k.res.Kernel, err)
			return false
		case err != nil:
			k.failErr(readErr(err), reason.InvalidRequest, "image %s cannot be built for %s", k.final.Image, k.res.Kernel)
			return false
		}
	}
	s := k.rec.Sign()
	if s == nil {
		return true
	}
	key, cert, err := sign.KeysFromSecrets(ctx, k.c.client, ns, s)
	switch {
	case apierrors.IsNotFound(err):
		k.set(Fails, reason.MissingSecret, "image %s cannot be signed for %s: %v", k.final.Image, k.res.Kernel, err)
		return false
	case err != nil:
		k.failErr(readErr(err), reason.SignFailed, "image %s cannot be signed for %s", k.final.Image, k.res.Kernel)
		return false
	}
	if _, err := signfile.ParseSigner(crypto.SHA256, key, cert); err != nil {
		k.set(Fails, reason.SignFailed, "image %s cannot be signed for %s: sign.keySecret %s/%s and sign.certSecret %s/%s: %v",
			k.final.Image, k.res.Kernel, ns, s.KeySecret.Name, ns, s.CertSecret.Name, err)
		return false
	}
	k.key, k.cert = key, cert
	if k.rec.Build() != nil {
		return true
	}
	if s.UnsignedImage == "" {
		k.set(Fails, reason.InvalidRequest, "sign: no image to sign given (sign.unsignedImage is empty and the Module defines no build)")
		return false
	}
	unsigned := k.request(s.UnsignedImage, s.UnsignedImageRegistryTLS, k.final.Auth)
	found, err := k.c.reg.Verify(ctx, unsigned)
	switch {
	case err != nil:
		k.failErr(err, reason.RegistryError, "checking sign.unsignedImage %s", s.UnsignedImage)
		return false
	case !found.Exists:
		k.set(Fails, reason.ImageNotFound, "image %s does not exist, and the image to sign, sign.unsignedImage %s, does not exist either (%s)",
			k.final.Image, s.UnsignedImage, found.Missing)
		return false
	}
	return true
}

// ready lints the image that exists at digest.
func (k *check) ready(ctx context.Context, digest, how string) {
	k.res.Digest = digest
	if !k.c.lint {
		k.set(Works, reason.ImageReady, "image %s %s (%s), for %s by %s", k.final.Image, how, digest, k.res.Kernel, k.res.Mapping)
		return
	}
	pinned := k.final
	if ref, err := registry.ParseReference(k.final.Image, k.final.TLS); err == nil {
		pinned.Image = ref.Context().Digest(digest).String()
	}
	rep, err := lint.Image(ctx, k.c.reg, pinned, k.res.Kernel, append([]lint.Option{lint.FromRecord(k.rec)}, k.c.lintOpts...)...)
	if err != nil {
		k.failErr(err, reason.RegistryError, "image %s %s but cannot be linted", k.final.Image, how)
		return
	}
	rep.Source = k.final.Image
	k.res.Lint = rep
	if !rep.OK() {
		k.set(Fails, reason.ImageLintFailed, "image %s %s (%s) but would not load on %s: %s", k.final.Image, how, digest, k.res.Kernel, rep.Summary(3))
		return
	}
	k.set(Works, reason.ImageReady, "image %s %s (%s), for %s by %s; %s", k.final.Image, how, digest, k.res.Kernel, k.res.Mapping, rep.Summary(0))
}
