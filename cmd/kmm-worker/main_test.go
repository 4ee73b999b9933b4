package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runAs(name string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), name, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestCommands: the worker binary has the node-side commands, under the
// name kmm and as depmod, and says what it is for anything else.
func TestCommands(t *testing.T) {
	code, stdout, _ := runAs("kmm", "depmod", "-V")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "compatible with kmod version 30")
	code, stdout, _ = runAs("depmod", "-V")
	assert.Equal(t, 0, code, "installed as depmod, it is depmod")
	assert.Contains(t, stdout, "compatible with kmod version 30")

	code, stdout, _ = runAs("kmm", "worker", "--help")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "kmm worker kmod load|unload CONFIG [--firmware-path DIR]")
	code, _, stderr := runAs("kmm", "worker", "kmod", "load")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "kmm worker kmod load: want exactly one argument, the config file; got 0")
	code, _, stderr = runAs("kmm", "worker", "kmod", "load", "/nonexistent/config.yaml")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "kmm worker kmod load: open /nonexistent/config.yaml: no such file or directory")

	code, _, stderr = runAs("kmm", "map", "-f", "m.yaml")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `kmm: unknown command "map" (this is the worker binary: worker and depmod only)`)
	code, _, stderr = runAs("kmm")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "usage: kmm worker load|unload --config FILE")
	code, stdout, _ = runAs("kmm", "-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "the node-side commands of kmm only")
	code, stdout, _ = runAs("kmm", "--version")
	assert.Equal(t, 0, code)
	assert.Regexp(t, `^kmm-worker \S+ \(go1\.\S+ linux/\w+\)\n$`, stdout)
}

// TestBuiltInRootCAs: where the system has no root CAs (the FROM-scratch
// worker image), the worker still trusts Mozilla's, built in.
func TestBuiltInRootCAs(t *testing.T) {
	if os.Getenv("KMMKIT_WORKER_ROOTS") == "1" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		//nolint:staticcheck // Subjects lists the fallback roots, which are not the system's.
		fmt.Println(len(pool.Subjects()))
		return
	}
	empty := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBuiltInRootCAs$")
	cmd.Env = append(os.Environ(), "KMMKIT_WORKER_ROOTS=1", "SSL_CERT_FILE="+filepath.Join(empty, "none.crt"), "SSL_CERT_DIR="+empty)
	out, err := cmd.Output()
	require.NoError(t, err)
	n, err := strconv.Atoi(strings.SplitN(string(out), "\n", 2)[0])
	require.NoError(t, err, "%s", out)
	assert.Greater(t, n, 100, "Mozilla's roots")
}
