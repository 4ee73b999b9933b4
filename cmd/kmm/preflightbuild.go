package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/builder/buildah"
	"github.com/kmmkit/kmmkit/builder/kaniko"
	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/lint"
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
	// buildahRoot and volumes configure --builder buildah (--buildah-root,
	// --build-volume).
	buildahRoot string
	volumes     []string
	// objects reads the Secrets the builds need (the manifest's, or the
	// cluster's); cluster is the cluster of --kubeconfig, where Kaniko
	// runs its build Pods (nil without it).
	objects, cluster kubernetes.Interface
	// lint are the lint options of the command (--kernel-tree,
	// --host-module), for the builders' lint of what they built.
	lint []lint.Option
}

// newBuilder returns the builder --builder names, and what removes its
// temporary files. checker returns the Checker once it exists: the
// builder pushes with the credentials the Checker uses for the image
// (--docker-config, or the Module's imageRepoSecret).
func newBuilder(spec builderSpec, reg *registry.Client, rf *registryFlags, checker func() *preflight.Checker) (builder.Builder, func(), error) {
	none := func() {}
	if spec.name != "assemble" && spec.modulesDir != "" {
		return nil, none, fmt.Errorf("--modules-dir is for --builder assemble, not %s", spec.name)
	}
	if spec.name != "buildah" && (spec.buildahRoot != "" || len(spec.volumes) > 0) {
		return nil, none, fmt.Errorf("--buildah-root and --build-volume are for --builder buildah, not %s", spec.name)
	}
	switch spec.name {
	case "assemble":
		return newAssembler(spec, reg, rf, checker)
	case "buildah":
		return newBuildah(spec, reg, rf)
	case "kaniko":
		if spec.cluster == nil {
			return nil, none, errors.New("--builder kaniko runs its build Pod in a cluster: give --kubeconfig, or build here with --builder buildah (or assemble)")
		}
		b, err := kaniko.New(spec.cluster, kaniko.WithRegistry(reg), kaniko.WithLint(spec.lint...),
			kaniko.WithRetryPolicy(builder.RetryPolicy{MaxAttempts: 1}))
		return b, none, err
	}
	return nil, none, fmt.Errorf("unknown --builder %q: use assemble, buildah or kaniko", spec.name)
}

// newAssembler is --builder assemble.
func newAssembler(spec builderSpec, reg *registry.Client, rf *registryFlags, checker func() *preflight.Checker) (builder.Builder, func(), error) {
	none := func() {}
	if spec.modulesDir == "" {
		return nil, none, errors.New("--builder assemble needs --modules-dir DIR (prebuilt modules, DIR/<kernel>/…)")
	}
	tls := rf.tls()
	b, err := assemble.New(reg, assemble.DirSource(spec.modulesDir), assemble.WithLint(spec.lint...),
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
	return b, none, err
}

// newBuildah is --builder buildah: the Module's Dockerfile built here
// with the buildah command, its build secrets and pull secret read from
// the manifest (or the cluster), --docker-config's credentials when
// given; --ca-file is trusted for the base images and the push.
func newBuildah(spec builderSpec, reg *registry.Client, rf *registryFlags) (builder.Builder, func(), error) {
	none := func() {}
	dockerConfig, err := rf.dockerConfigData()
	if err != nil {
		return nil, none, err
	}
	objects := spec.objects
	opts := []buildah.Option{
		buildah.WithRegistry(reg), buildah.WithLint(spec.lint...), buildah.WithVolumes(spec.volumes...),
		buildah.WithRetryPolicy(builder.RetryPolicy{MaxAttempts: 1}),
		buildah.WithSecrets(func(ctx context.Context, ns, name string) (map[string][]byte, error) {
			s, err := objects.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return s.Data, nil
		}),
		buildah.WithAuth(func(ctx context.Context, req builder.Request) ([]byte, error) {
			if dockerConfig != nil || req.PullSecret == nil || req.PullSecret.Name == "" {
				return dockerConfig, nil
			}
			s, err := objects.CoreV1().Secrets(req.Namespace).Get(ctx, req.PullSecret.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("imageRepoSecret %s/%s: %w", req.Namespace, req.PullSecret.Name, err)
			}
			if d, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
				return d, nil
			}
			return nil, fmt.Errorf("imageRepoSecret %s/%s has no %s", req.Namespace, req.PullSecret.Name, corev1.DockerConfigJsonKey)
		}),
	}
	if spec.buildahRoot != "" {
		opts = append(opts, buildah.WithStorage(filepath.Join(spec.buildahRoot, "root"), filepath.Join(spec.buildahRoot, "runroot")))
	}
	cleanup := none
	if *rf.caFile != "" {
		// buildah reads CA certificates from a directory of *.crt files.
		pem, err := os.ReadFile(*rf.caFile)
		if err != nil {
			return nil, none, err
		}
		dir, err := os.MkdirTemp("", "kmm-preflight-certs")
		if err != nil {
			return nil, none, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		if err := os.WriteFile(filepath.Join(dir, "ca.crt"), pem, 0o644); err != nil {
			cleanup()
			return nil, none, err
		}
		opts = append(opts, buildah.WithCertDir(dir))
	}
	b, err := buildah.New(opts...)
	if err != nil {
		cleanup()
		return nil, none, err
	}
	return b, cleanup, nil
}
