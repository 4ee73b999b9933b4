package main

import (
	"context"
	"io"

	"github.com/kmmkit/kmmkit/internal/nodecmd"
)

// runWorker implements "kmm worker": KMM's worker, natively (package
// internal/nodecmd, shared with the worker binary cmd/kmm-worker).
func runWorker(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return nodecmd.Worker(ctx, nodecmd.Env{}, args, stdout, stderr)
}

// runDepmod implements "kmm depmod" (and kmm installed as depmod).
func runDepmod(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return nodecmd.Depmod(ctx, args, stdout, stderr)
}
