package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/preflight"
	"github.com/kmmkit/kmmkit/registry"
)

// logrContext returns ctx carrying a logger that writes to w up to
// verbosity v (none for v <= 0).
func logrContext(ctx context.Context, w io.Writer, v int) context.Context {
	return logr.NewContext(ctx, cli.NewLogger(w, v))
}

// builderSpec is what the --build flags ask for.
type builderSpec struct {
	name, modulesDir string
}

// newBuilder returns the builder --builder names. checker returns the
// Checker once it exists: the builder pushes with the credentials the
// Checker uses for the image (--docker-config, or the Module's
// imageRepoSecret).
func newBuilder(spec builderSpec, reg *registry.Client, rf *registryFlags, checker func() *preflight.Checker) (builder.Builder, error) {
	switch spec.name {
	case "assemble":
	case "buildah", "kaniko":
		return nil, fmt.Errorf("--builder %s: not available in kmm preflight yet; use --builder assemble, or let the Reconciler build", spec.name)
	default:
		return nil, fmt.Errorf("unknown --builder %q: use assemble", spec.name)
	}
	if spec.modulesDir == "" {
		return nil, errors.New("--builder assemble needs --modules-dir DIR (prebuilt modules, DIR/<kernel>/…)")
	}
	tls := rf.tls()
	return assemble.New(reg, assemble.DirSource(spec.modulesDir),
		assemble.WithPush(func(ctx context.Context, req builder.Request) (registry.Request, error) {
			auth, err := checker().Credentials(ctx, req.Namespace, req.PullSecret)
			if err != nil {
				return registry.Request{}, err
			}
			t := req.RegistryTLS
			t.Insecure = t.Insecure || tls.Insecure
			t.InsecureSkipTLSVerify = t.InsecureSkipTLSVerify || tls.InsecureSkipTLSVerify
			return registry.Request{Image: req.Image, TLS: t, Auth: auth}, nil
		}))
}
