// Command kmm is kmmkit's command-line tool. Subcommands:
//
//	kmm map -f MODULE.yaml --kernel VERSION [--kernel VERSION ...] [-o yaml|json]
//	kmm validate -f MODULE.yaml
//	kmm image check REF [--insecure] [--skip-tls-verify] [--ca-file F] [--docker-config F] [--platform OS/ARCH]
//	kmm worker load|unload --config FILE [--image-dir DIR] [--firmware-host-path DIR] ...
//	kmm sign-file HASH KEY CERT MODULE [DEST]
//	kmm depmod [-aAenvw] [-b DIR] [-o DIR] [-C PATH] [-E FILE | -F FILE] [-P C] [VERSION [FILE...]]
//
// Installed or linked under the name "depmod", kmm is depmod: a kmod
// image's final stage can run `depmod -b /opt ${KERNEL_FULL_VERSION}`
// with no kmod in it.
//
// Exit status: 0 on success, 1 when the answer is "no" (no kernel mapping
// matches, the manifest is invalid), 2 on any other error; kmm depmod
// exits as kmod's depmod does (1 on any failure).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// Exit codes shared by the subcommands.
const (
	exitOK    = 0
	exitNo    = 1
	exitError = 2
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{name: "map", summary: "resolve a Module for node kernels and print the per-kernel records", run: runMap},
		{name: "validate", summary: "check Modules against every rule of KMM's admission webhook and CRD", run: runValidate},
		{name: "image", summary: "image check REF: does a kernel-module image exist? (prints its digest)", run: runImage},
		{name: "worker", summary: "load|unload --config F: KMM's worker on the node, natively (no kmod, no shell)", run: runWorker},
		{name: "sign-file", summary: "HASH KEY CERT MODULE [DEST]: the kernel's sign-file, natively (byte-identical for RSA)", run: runSignFile},
		{name: "depmod", summary: "kmod's depmod, natively: same flags, byte-identical index files", run: runDepmod},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "depmod" {
		args = append([]string{"depmod"}, args...)
	}
	code := run(ctx, args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitError
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "kmm: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitError
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kmm <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'kmm <command> -h' for the flags of a command.")
}
