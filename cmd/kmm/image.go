package main

import (
	"context"
	"fmt"
	"io"

	"github.com/kmmkit/kmmkit/internal/cli"
)

var imageHelp = help{
	Synopsis: "kmm image check REF [flags]\n       kmm image lint REF --kernel VERSION [flags]\n       kmm image worker REF [flags]",
	About: "Commands on images. check: does a kernel-module image exist in its registry? lint: would it load on a node\n" +
		"of that kernel? worker: build and push kmmkit's worker image. Run 'kmm image check -h', 'kmm image lint -h' or\n" +
		"'kmm image worker -h'.",
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
	if code, ok := cli.Subcommand("kmm image", imageHelp, args, []string{"check", "lint", "worker"}, stdout, stderr); !ok {
		return code
	}
	switch args[0] {
	case "worker":
		return runImageWorker(ctx, args[1:], stdout, stderr)
	case "lint":
		return runImageLint(ctx, args[1:], stdout, stderr)
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
	rf := addRegistryFlags(fs)
	// Accept flags after the reference too.
	operands, code, ok := cli.ParseInterspersed(fs, args, stdout, stderr)
	switch {
	case !ok:
		return code
	case len(operands) > 1:
		fmt.Fprintf(stderr, "kmm image check: unexpected argument %q\n", operands[1])
		return exitError
	case len(operands) == 0:
		fmt.Fprintln(stderr, "kmm image check: no image reference given")
		imageCheckHelp.Write(stderr, fs)
		return exitError
	}
	ref := operands[0]
	checker, req, ok := rf.open("kmm image check", ref, stderr)
	if !ok {
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
