package main

import (
	"context"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

var imageHelp = help{
	Synopsis: "kmm image check REF [flags]\n       kmm image worker REF [flags]",
	About: "Commands on images. check: does a kernel-module image exist in its registry? worker: build and push\n" +
		"kmmkit's worker image. Run 'kmm image check -h' or 'kmm image worker -h'.",
	Exit: "that of the command; 2 for an unknown one.",
}

var imageCheckHelp = help{
	Synopsis: "kmm image check REF [--insecure] [--skip-tls-verify] [--ca-file F] [--docker-config F] [--platform OS/ARCH]",
	About: "Asks the registry whether the image and every blob of its manifest exist, for the node's platform, and\n" +
		"prints its digest. REF must name a tag or a digest, as a Module's images must.",
	Exit: "0 when the image exists (the digest is printed), 1 when the registry said it does not (\"not found\"),\n" +
		"2 with the reason and whose fault it is on any other answer or error (an untagged or invalid REF, refused\n" +
		"credentials, TLS, an unreachable registry, …).",
}

// runImage implements "kmm image ...".
func runImage(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if code, ok := cli.Subcommand("kmm image", imageHelp, args, []string{"check", "worker"}, stdout, stderr); !ok {
		return code
	}
	if args[0] == "worker" {
		return runImageWorker(ctx, args[1:], stdout, stderr)
	}
	return runImageCheck(ctx, args[1:], stdout, stderr)
}

// runImageCheck implements "kmm image check": exit 0 and the digest when
// the image and every blob of it exist, 1 and "not found" with the
// registry's reason when the registry definitely answered that it does
// not, 2 and the reason (a reason constant and a message saying whose
// fault it is) on any other answer or error.
func runImageCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kmm image check", imageCheckHelp)
	insecure := fs.Bool("insecure", false, "use plain HTTP (registryTLS.insecure)")
	skipVerify := fs.Bool("skip-tls-verify", false, "accept any server certificate (registryTLS.insecureSkipTLSVerify)")
	caFile := fs.String("ca-file", "", "PEM file of extra CA certificates")
	dockerConfig := fs.String("docker-config", "", "Docker config.json (or .dockercfg) with the credentials")
	platform := fs.String("platform", "", "platform of the node, such as linux/arm64; for an index, its manifest decides")
	timeout := fs.Duration("timeout", registry.DefaultCheckTimeout, "give up after this long")
	idle := fs.Duration("idle-timeout", registry.DefaultIdleTimeout, "give up when the registry sends nothing for this long")
	// Accept flags after the reference too.
	var ref string
	for len(args) > 0 {
		if code, ok := cli.ParseFlags(fs, args, stdout, stderr); !ok {
			return code
		}
		args = fs.Args()
		if len(args) > 0 {
			if ref != "" {
				fmt.Fprintf(stderr, "kmm image check: unexpected argument %q\n", args[0])
				return exitError
			}
			ref, args = args[0], args[1:]
		}
	}
	if ref == "" {
		fmt.Fprintln(stderr, "kmm image check: no image reference given")
		imageCheckHelp.Write(stderr, fs)
		return exitError
	}
	if errs := v1beta1.ValidateImageReference(ref, field.NewPath("image")); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "kmm image check: %v\n", &registry.Error{Reason: registry.ReasonInvalid, Image: ref, Detail: e.Detail})
		}
		return exitError
	}
	if *timeout <= 0 || *idle <= 0 {
		fmt.Fprintln(stderr, "kmm image check: --timeout and --idle-timeout must be positive")
		return exitError
	}
	opts := []registry.Option{registry.WithTimeouts(*timeout, 0), registry.WithIdleTimeout(*idle)}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(stderr, "kmm image check: %v\n", err)
			return exitError
		}
		opts = append(opts, registry.WithCABundle(pem))
	}
	req := registry.Request{Image: ref, TLS: v1beta1.TLSOptions{Insecure: *insecure, InsecureSkipTLSVerify: *skipVerify}}
	if *dockerConfig != "" {
		data, err := os.ReadFile(*dockerConfig)
		if err != nil {
			fmt.Fprintf(stderr, "kmm image check: %v\n", err)
			return exitError
		}
		kc, err := registry.DockerConfigKeychain(data)
		if err != nil {
			fmt.Fprintf(stderr, "kmm image check: %s: %v\n", *dockerConfig, err)
			return exitError
		}
		req.Auth = registry.AuthInfo{Keychain: kc, Secrets: []string{*dockerConfig}}
	}
	if *platform != "" {
		p, err := v1.ParsePlatform(*platform)
		if err != nil {
			fmt.Fprintf(stderr, "kmm image check: --platform: %v\n", err)
			return exitError
		}
		req.Platform = p
	}
	checker, err := registry.NewClient(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "kmm image check: %v\n", err)
		return exitError
	}
	res, err := checker.Check(ctx, req)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "kmm image check: %v\n", err)
		return exitError
	case !res.Exists:
		fmt.Fprintf(stdout, "not found: %s (%s)\n", ref, res.Missing)
		return exitNo
	}
	fmt.Fprintln(stdout, res.Digest)
	return exitOK
}
