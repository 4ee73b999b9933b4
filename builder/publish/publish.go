// Package publish is the last step of a Dockerfile build (buildah, the
// buildah library, Kaniko): the build pushes its image to a staging tag
// (StagingTag), and Publisher.Publish pulls what was pushed, lints it for
// the request's kernel (package lint: the Module's dirName, firmware path
// and modules, and the Publisher's options), and only when the lint finds
// nothing tags the same manifest at the request's image. An image that
// cannot load therefore never appears at the tag a Reconciler checks: the
// build fails with reason.ImageLintFailed and the findings, and the
// kernel stays not ready. The staging tag keeps the bad image, for
// kmm image lint to show it all.
package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/internal/ociimage"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/registry"
)

// stagingSuffix ends a staging tag.
const stagingSuffix = "-kmmkit-unlinted"

// StagingTag returns where a Dockerfile build pushes the image of image
// before it is linted: the same repository, with the tag
// "<tag>-kmmkit-unlinted" (for a digest reference, the digest's first 16
// hex digits), cut to the 128 characters a tag may have.
func StagingTag(image string) (string, error) {
	return ociimage.SiblingTag(image, stagingSuffix)
}

// Option configures a Publisher.
type Option func(*options)

type options struct {
	lint []lint.Option
}

// WithLint adds lint options to those every Publish takes from the
// request (lint.WithKernelTree, lint.WithHostModules, …).
func WithLint(opts ...lint.Option) Option {
	return func(o *options) { o.lint = append(o.lint, opts...) }
}

// maxRemembered bounds the verdicts a Publisher remembers.
const maxRemembered = 1024

// Publisher lints and publishes the images builds pushed to their
// staging tags. It remembers each build's verdict (by the key Publish is
// given), so a build is linted once. It is safe for concurrent use.
type Publisher struct {
	client *registry.Client
	o      options
	mu     sync.Mutex
	done   map[string]verdict
}

type verdict struct {
	digest string
	err    error
}

// New returns a Publisher that pulls and pushes through client; it fails
// without one.
func New(client *registry.Client, opts ...Option) (*Publisher, error) {
	if client == nil {
		return nil, errors.New("publish: New needs a registry client")
	}
	p := &Publisher{client: client, done: map[string]verdict{}}
	for _, f := range opts {
		f(&p.o)
	}
	return p, nil
}

// LintOptions are the lint options of a build request: its dirName,
// firmware path and modules.
func LintOptions(req builder.Request) []lint.Option {
	return []lint.Option{lint.WithDirName(req.DirName), lint.WithFirmwarePath(req.FirmwarePath), lint.WithModules(req.Modules...)}
}

// Publish lints the image a build of req pushed to StagingTag(req.Image)
// and, when the lint finds nothing, tags its manifest at req.Image; it
// returns the digest. auth is the credentials of req's registry, the
// push's (req.RegistryTLS applies). Findings are a *lint.Error
// (reason.ImageLintFailed, the findings in its message): the image is not
// published. key names the build (its object and attempt): a verdict, a
// digest or findings, is remembered under it; other errors (the registry
// is unreachable) are not, and the next call tries again.
func (p *Publisher) Publish(ctx context.Context, req builder.Request, auth registry.AuthInfo, key string) (string, error) {
	if key != "" {
		p.mu.Lock()
		v, ok := p.done[key]
		p.mu.Unlock()
		if ok {
			return v.digest, v.err
		}
	}
	digest, err := p.publish(ctx, req, auth)
	var le *lint.Error
	if key != "" && (err == nil || errors.As(err, &le)) {
		p.mu.Lock()
		if len(p.done) >= maxRemembered {
			p.done = map[string]verdict{}
		}
		p.done[key] = verdict{digest: digest, err: err}
		p.mu.Unlock()
	}
	return digest, err
}

func (p *Publisher) publish(ctx context.Context, req builder.Request, auth registry.AuthInfo) (string, error) {
	staging, err := StagingTag(req.Image)
	if err != nil {
		return "", err
	}
	staged := registry.Request{Image: staging, TLS: req.RegistryTLS, Auth: auth}
	rep, err := lint.Image(ctx, p.client, staged, req.Kernel.Version, append(LintOptions(req), p.o.lint...)...)
	if err != nil {
		return "", fmt.Errorf("linting the built image %s: %w", staging, err)
	}
	if err := rep.Err(); err != nil {
		return "", err
	}
	// Tag exactly the manifest that was linted.
	pinned := staged
	if ref, err := registry.ParseReference(staging, req.RegistryTLS); err == nil && rep.Digest != "" {
		pinned.Image = ref.Context().Digest(rep.Digest).String()
	}
	img, _, err := p.client.Pull(ctx, pinned)
	if err != nil {
		return "", fmt.Errorf("publishing %s: %w", req.Image, err)
	}
	digest, err := p.client.Push(ctx, registry.Request{Image: req.Image, TLS: req.RegistryTLS, Auth: auth}, img)
	if err != nil {
		return "", fmt.Errorf("publishing %s: %w", req.Image, err)
	}
	return digest, nil
}
