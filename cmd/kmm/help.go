package main

import (
	"fmt"
	"io"

	"github.com/kmmkit/kmmkit/internal/cli"
)

// help is what -h prints for a command (package internal/cli, shared with
// the worker binary).
type help = cli.Help

// version is kmm's version; release builds set it with
// -ldflags "-X main.version=v1.2.3". Empty, the module version of the
// build (go install …@v1.2.3) or the VCS revision is printed.
var version string

// versionString says which kmm this is and what built it.
func versionString() string { return cli.Version("kmm", version) }

// versionHelp is the help of "kmm version".
var versionHelp = help{
	Synopsis: "kmm version   (or kmm --version)",
	About:    "Prints kmm's version and the Go version and platform it was built for.",
	Exit:     "0.",
}

// runVersion implements "kmm version".
func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kmm version", versionHelp)
	if code, ok := cli.ParseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmm version: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	fmt.Fprintln(stdout, versionString())
	return exitOK
}
