// Command kmm-worker is the worker binary: the node-side commands of kmm
// only, without the Kubernetes clients the cluster-side commands link. It
// is /kmm in the worker image (`kmm image worker REF` builds and pushes
// that image; `make worker-image REF=...` runs it), where the worker Pods
// run it:
//
//	kmm worker load|unload --config FILE [--image-dir DIR] [--pull-dir DIR] [--firmware-host-path DIR] [--set-firmware-class-path] [--docker-config F] [--ca-file F]
//	kmm worker kmod load|unload CONFIG [--firmware-path DIR]
//	kmm depmod [-aAenvw] [-b DIR] [-o DIR] [-C PATH] [-E FILE | -F FILE] [-P C] [VERSION [FILE...]]
//	kmm --version
//
// The first is kmmkit's worker Pod's command line (loader.WorkerPod); the
// second is KMM's worker's, which KMM's operator passes to its worker
// image as arguments of the image's entrypoint (/kmm worker), so KMM's
// operator runs this image unchanged. Installed or linked under the name
// "depmod", it is depmod. It trusts the system's root CAs, or, where there
// are none (as in the FROM-scratch worker image), Mozilla's, built in
// (golang.org/x/crypto/x509roots/fallback), plus those the image holds at
// /etc/kmmkit/ca-bundle.crt (kmm image worker --ca-bundle).
//
// Exit status: 0 on success, 2 on any error; depmod exits as kmod's does.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	// Mozilla's root CAs, for when the system has none (the worker image
	// is FROM scratch): the worker pulls kmod images over TLS.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/internal/nodecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, filepath.Base(os.Args[0]), os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// version is the worker binary's version; release builds set it with
// -ldflags "-X main.version=v1.2.3".
var version string

const usage = `usage: kmm worker load|unload --config FILE [flags]
       kmm worker kmod load|unload CONFIG [--firmware-path DIR]
       kmm depmod [options] [VERSION [FILE...]]
       kmm --version

This is kmmkit's worker binary: the node-side commands of kmm only.
Run 'kmm worker -h' or 'kmm depmod -h' for their flags.

exit status: 0 on success, 2 on usage and any other error; depmod exits as kmod's depmod (0 or 1).`

// run dispatches on the name the binary was called by and its arguments.
func run(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	if name == "depmod" {
		return nodecmd.Depmod(ctx, args, stdout, stderr)
	}
	switch {
	case len(args) == 0:
		fmt.Fprintln(stderr, usage)
		return cli.ExitError
	case cli.IsHelp(args[0]) || args[0] == "help":
		fmt.Fprintln(stdout, usage)
		return cli.ExitOK
	case args[0] == "--version" || args[0] == "-version" || args[0] == "version":
		fmt.Fprintln(stdout, cli.Version("kmm-worker", version))
		return cli.ExitOK
	case args[0] == "worker":
		return nodecmd.Worker(ctx, nodecmd.Env{}, args[1:], stdout, stderr)
	case args[0] == "depmod":
		return nodecmd.Depmod(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "kmm: unknown command %q (this is the worker binary: worker and depmod only)\n\n%s\n", args[0], usage)
	return cli.ExitError
}
