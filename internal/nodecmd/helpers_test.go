package nodecmd

import (
	"bytes"
	"context"
	"testing"
)

// runWorker runs "kmm worker ARGS" on env: the exit status, standard
// output and standard error.
func runWorker(t *testing.T, env Env, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Worker(context.Background(), env, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// runDepmod runs "kmm depmod ARGS".
func runDepmod(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Depmod(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}
