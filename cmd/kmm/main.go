// Command kmm is kmmkit's command-line tool. Commands:
//
//	kmm map -f MODULE.yaml --kernel VERSION [--kernel VERSION ...] [-o yaml|json]
//	kmm validate -f FILE [--path FIELD [--embedded]]
//	kmm image check REF [--insecure] [--skip-tls-verify] [--ca-file F] [--docker-config F] [--platform OS/ARCH]
//	kmm image lint REF|--dir DIR --kernel VERSION [--vermagic V | --kernel-tree DIR] [--module NAME] [--signed] ...
//	kmm preflight -f MODULES.yaml|--kubeconfig F --kernel VERSION [--kernel VERSION ...] [--build --modules-dir DIR] [-o json]
//	kmm worker load|unload --config FILE [--image-dir DIR] [--firmware-host-path DIR] ...
//	kmm worker kmod load|unload CONFIG [--firmware-path DIR]
//	kmm sign-file HASH KEY CERT MODULE [DEST]
//	kmm depmod [-aAenvw] [-b DIR] [-o DIR] [-C PATH] [-E FILE | -F FILE] [-P C] [VERSION [FILE...]]
//	kmm version (or kmm --version)
//	kmm help [COMMAND [SUBCOMMAND]]
//
// Installed or linked under the name "depmod", kmm is depmod: a kmod
// image's final stage can run `depmod -b /opt ${KERNEL_FULL_VERSION}`
// with no kmod in it.
//
// Every command and subcommand prints its flags and exit status with -h
// (on standard output, exit 0). Exit status: 0 on success, 1 when the
// answer is "no" (no kernel mapping matches, the manifest is invalid, the
// image does not exist), 2 on usage and any other error; kmm depmod exits
// as kmod's depmod does (1 on any failure).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/kmmkit/kmmkit/internal/cli"
)

// Exit codes shared by the subcommands.
const (
	exitOK    = cli.ExitOK
	exitNo    = cli.ExitNo
	exitError = cli.ExitError
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
	// help, when set, is printed for -h or --help given alone; commands
	// that parse their own flags print their own.
	help *help
}

func commands() []command {
	return []command{
		{name: "map", summary: "resolve a Module for node kernels and print the per-kernel records", run: runMap},
		{name: "validate", summary: "check Modules, or specs embedded in any resource, against every rule of KMM's webhook and CRD", run: runValidate},
		{name: "image", summary: "image check REF: does a kernel-module image exist? (prints its digest); image lint REF: would it load?", run: runImage},
		{name: "preflight", summary: "-f MODULES.yaml --kernel VERSION: would each Module work on a kernel no node runs yet?", run: runPreflight},
		{name: "worker", summary: "load|unload --config F: KMM's worker on the node, natively (no kmod, no shell); kmod load|unload F: KMM's worker's command line", run: runWorker},
		{name: "sign-file", summary: "HASH KEY CERT MODULE [DEST]: the kernel's sign-file, natively (byte-identical for RSA)", run: runSignFile, help: &signFileHelp},
		{name: "depmod", summary: "kmod's depmod, natively: same flags, byte-identical index files", run: runDepmod},
		{name: "version", summary: "print kmm's version and the Go version it was built with", run: func(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
			return runVersion(args, stdout, stderr)
		}},
	}
}

// signFileHelp is the help of "kmm sign-file", which takes no flags.
var signFileHelp = help{
	Synopsis: "kmm sign-file HASH KEY CERT MODULE [DEST]",
	About: "Appends a PKCS#7 signature to a kernel module, as the kernel's scripts/sign-file does (byte-identical for RSA keys):\n" +
		"HASH is the digest (sha256, sha512, …), KEY the PEM private key, CERT the PEM or DER certificate; the signed module\n" +
		"replaces MODULE, or is written to DEST.",
	Exit: "0 when the module is signed, 2 on any error.",
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
	switch {
	case len(args) == 0:
		usage(stderr)
		return exitError
	case cli.IsHelp(args[0]):
		usage(stdout)
		return exitOK
	case args[0] == "--version" || args[0] == "-version":
		return runVersion(args[1:], stdout, stderr)
	case args[0] == "help":
		return runHelp(ctx, args[1:], stdin, stdout, stderr)
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(stderr, "kmm: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitError
	}
	if c.help != nil && len(args) == 2 && cli.IsHelp(args[1]) {
		c.help.Write(stdout, nil)
		return exitOK
	}
	return c.run(ctx, args[1:], stdin, stdout, stderr)
}

// runHelp implements "kmm help [COMMAND [SUBCOMMAND]]": the command's own
// -h.
func runHelp(ctx context.Context, topic []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(topic) == 0 || (len(topic) == 1 && topic[0] == "help") {
		usage(stdout)
		return exitOK
	}
	if _, ok := lookup(topic[0]); !ok {
		fmt.Fprintf(stderr, "kmm help: unknown help topic %q\n\n", topic[0])
		usage(stderr)
		return exitError
	}
	return run(ctx, append(append([]string(nil), topic...), "-h"), stdin, stdout, stderr)
}

// lookup finds a command by name.
func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kmm <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-10s %s\n", "help", "help COMMAND [SUBCOMMAND]: the flags and exit status of a command")
	fmt.Fprintln(w, "\nexit status: 0 on success; 1 when the answer is no (no kernel mapping matches, a manifest is invalid,\n"+
		"an image does not exist); 2 on usage and other errors. kmm depmod exits as kmod's depmod (0 or 1).\n\n"+
		"Run 'kmm help <command>' or 'kmm <command> -h' for the flags and exit status of a command; 'kmm --version' for the version.")
}
