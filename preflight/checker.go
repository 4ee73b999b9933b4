package preflight

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
)

// Signer signs an image's modules and pushes the signed image
// (*sign.Signer).
type Signer interface {
	Sign(ctx context.Context, req sign.Request) (sign.Result, error)
}

// Checker checks Modules against kernels. It is safe for concurrent use.
type Checker struct {
	client kubernetes.Interface
	reg    *registry.Client
	mapper *kernelmap.Mapper
	options
}

// options are what the Options record; New checks them.
type options struct {
	builder  builder.Builder
	signer   Signer
	platform *v1.Platform
	auth     *registry.AuthInfo
	tls      v1beta1.TLSOptions
	identity identity.Domain
	lint     bool
	lintOpts []lint.Option
	timeout  time.Duration
	poll     time.Duration
}

// Option configures a Checker.
type Option func(*options)

// WithBuilder makes the Checker build (and sign) a missing image whose
// build is defined, and push it, instead of only checking that the build
// can run: the assembler, buildah or Kaniko, through builder.Builder.
func WithBuilder(b builder.Builder) Option { return func(o *options) { o.builder = b } }

// WithSigner replaces the signer used after a build, or for a sign-only
// Module, when a builder is set (default: sign.New on the Checker's
// registry client).
func WithSigner(s Signer) Option { return func(o *options) { o.signer = s } }

// WithPlatform checks images for the nodes' platform (linux/arm64, say):
// an index must hold a manifest for it. Nil accepts any.
func WithPlatform(p *v1.Platform) Option { return func(o *options) { o.platform = p } }

// WithAuth gives the registry credentials for every image, instead of
// each Module's imageRepoSecret (the command line's --docker-config).
func WithAuth(a registry.AuthInfo) Option { return func(o *options) { o.auth = &a } }

// WithTLS adds TLS options to every registry request, on top of the
// Module's registryTLS (plain HTTP, or no certificate check).
func WithTLS(t v1beta1.TLSOptions) Option { return func(o *options) { o.tls = t } }

// WithIdentity names the builds the Checker starts as an operator with
// that identity does (package identity; the default is KMM's Module).
func WithIdentity(d identity.Domain) Option { return func(o *options) { o.identity = d } }

// WithLint sets options of the linter on top of those the kernel mapping
// gives (lint.FromRecord), such as lint.WithHostModules.
func WithLint(opts ...lint.Option) Option {
	return func(o *options) { o.lintOpts = append(o.lintOpts, opts...) }
}

// WithoutLint leaves images that exist unlinted.
func WithoutLint() Option { return func(o *options) { o.lint = false } }

// WithBuildTimeout bounds one build (default one hour), and
// WithPollInterval the wait between two looks at a running one (default
// 2 s).
func WithBuildTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithPollInterval sets the wait between two looks at a running build.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.poll = d } }

// New returns a Checker that reads Secrets and ConfigMaps through client
// (a real cluster, or an in-memory one holding a manifest's objects) and
// asks registries through reg.
func New(client kubernetes.Interface, reg *registry.Client, opts ...Option) (*Checker, error) {
	if client == nil || reg == nil {
		return nil, errors.New("preflight: a Kubernetes client and a registry client are required")
	}
	mapper, err := kernelmap.New()
	if err != nil {
		return nil, err
	}
	o := options{lint: true, timeout: time.Hour, poll: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.timeout <= 0:
		return nil, fmt.Errorf("preflight: WithBuildTimeout(%s): the timeout must be positive", o.timeout)
	case o.poll <= 0:
		return nil, fmt.Errorf("preflight: WithPollInterval(%s): the interval must be positive", o.poll)
	}
	if o.signer == nil {
		if o.signer, err = sign.New(reg); err != nil {
			return nil, err
		}
	}
	c := &Checker{client: client, reg: reg, mapper: mapper, options: o}
	return c, nil
}

// Credentials returns how the Checker authenticates to registries for an
// image of a Module in namespace that names the pull secret secret: the
// credentials of WithAuth, else the pull secret (pullsecret.Keychain),
// else none. Builders the Checker runs push with the same.
func (c *Checker) Credentials(ctx context.Context, namespace string, secret *corev1.LocalObjectReference) (registry.AuthInfo, error) {
	switch {
	case c.auth != nil:
		return *c.auth, nil
	case secret == nil || secret.Name == "":
		return registry.AuthInfo{}, nil
	}
	return pullsecret.Keychain(ctx, c.client, namespace, secret.Name)
}

// Run checks every Module on every kernel, by Module then kernel.
func (c *Checker) Run(ctx context.Context, mods []Module, kernels []string) *Report {
	rep := &Report{Kernels: append([]string(nil), kernels...), Results: []Result{}}
	for _, m := range mods {
		for _, k := range kernels {
			rep.Results = append(rep.Results, c.Check(ctx, m, k))
		}
	}
	return rep
}
