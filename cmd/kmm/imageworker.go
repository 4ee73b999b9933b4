package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/internal/nodecmd"
	"github.com/kmmkit/kmmkit/internal/workerimage"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

var imageWorkerHelp = help{
	Synopsis: "kmm image worker REF [--platform linux/amd64,linux/arm64] [--insecure] [--skip-tls-verify] [--ca-file F] [--docker-config F] [--ca-bundle F] [--source DIR] [--go PATH]",
	About: "Builds kmmkit's worker image and pushes it to REF as an OCI image index, with no container daemon: for each\n" +
		"platform the static worker binary (cmd/kmm-worker), cross-compiled with the Go toolchain from kmmkit's source\n" +
		"(the checkout at or above the working directory, --source, or a go-installed release in the module cache), at\n" +
		"/kmm in a FROM-scratch image whose entrypoint is \"/kmm worker\" (the worker trusts Mozilla's root CAs, built in,\n" +
		"and those of --ca-bundle). The same source and toolchain give the same digest, which it prints. Use REF as\n" +
		"the worker image of kmm.WithWorkerPods or loader.NewPodLoader, or as KMM's RELATED_IMAGE_WORKER.",
	Exit: "0 when the index is pushed (its digest is printed), 2 on any error (no Go toolchain or source, a failed build,\n" +
		"refused credentials, TLS, an unreachable registry, …).",
}

// runImageWorker implements "kmm image worker".
func runImageWorker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kmm image worker", imageWorkerHelp)
	platforms := fs.String("platform", "linux/amd64,linux/arm64", "comma-separated platforms to build")
	insecure := fs.Bool("insecure", false, "push over plain HTTP")
	skipVerify := fs.Bool("skip-tls-verify", false, "accept any server certificate")
	caFile := fs.String("ca-file", "", "PEM file of extra CA certificates to trust when pushing")
	dockerConfig := fs.String("docker-config", "", "Docker config.json (or .dockercfg) with the credentials to push")
	caBundle := fs.String("ca-bundle", "", "PEM file of CA certificates the worker trusts besides its built-in roots (a private registry's CA), laid at "+nodecmd.ImageCABundle+" in the image")
	source := fs.String("source", "", "kmmkit's source (the directory of its go.mod); default: found at or above the working directory")
	goTool := fs.String("go", "go", "the go command")
	verbose := fs.Int("v", 1, "log verbosity")
	refs, code, ok := cli.ParseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	switch {
	case len(refs) == 0:
		fmt.Fprintln(stderr, "kmm image worker: no image reference given")
		imageWorkerHelp.Write(stderr, fs)
		return exitError
	case len(refs) > 1:
		fmt.Fprintf(stderr, "kmm image worker: unexpected argument %q\n", refs[1])
		return exitError
	}
	ref := refs[0]
	if errs := v1beta1.ValidateImageReference(ref, field.NewPath("image")); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "kmm image worker: %v\n", &registry.Error{Reason: registry.ReasonInvalid, Image: ref, Detail: e.Detail})
		}
		return exitError
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "kmm image worker: %v\n", err)
		return exitError
	}
	opts := workerimage.Options{Source: *source, Go: *goTool, Log: cli.NewLogger(stderr, *verbose)}
	for _, s := range strings.Split(*platforms, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(s))
		if err == nil && strings.TrimSpace(s) == "" {
			err = errors.New("an empty platform")
		}
		if err != nil {
			return fail(fmt.Errorf("--platform %q: %w", s, err))
		}
		opts.Platforms = append(opts.Platforms, *p)
	}
	req := registry.Request{Image: ref, TLS: v1beta1.TLSOptions{Insecure: *insecure, InsecureSkipTLSVerify: *skipVerify}}
	if _, err := registry.ParseReference(ref, req.TLS); err != nil {
		return fail(&registry.Error{Reason: registry.ReasonInvalid, Image: ref, Err: err})
	}
	var clientOpts []registry.Option
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fail(err)
		}
		clientOpts = append(clientOpts, registry.WithCABundle(pem))
	}
	if *dockerConfig != "" {
		data, err := os.ReadFile(*dockerConfig)
		if err != nil {
			return fail(err)
		}
		kc, err := registry.DockerConfigKeychain(data)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", *dockerConfig, err))
		}
		req.Auth = registry.AuthInfo{Keychain: kc, Secrets: []string{*dockerConfig}}
	}
	if *caBundle != "" {
		data, err := os.ReadFile(*caBundle)
		if err != nil {
			return fail(fmt.Errorf("--ca-bundle: %w", err))
		}
		opts.CABundle = data
	}
	client, err := registry.NewClient(clientOpts...)
	if err != nil {
		return fail(err)
	}
	idx, err := workerimage.Build(ctx, opts)
	if err != nil {
		return fail(err)
	}
	digest, err := client.PushIndex(ctx, req, idx)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(stdout, digest)
	return exitOK
}
