package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

func TestSignFileCommand(t *testing.T) {
	openssl := testenv.LookPath(t, "openssl", "apt-get install openssl")
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	out, err := exec.Command(openssl, "req", "-new", "-nodes", "-batch", "-x509", "-days", "1", "-subj", "/CN=t",
		"-newkey", "rsa:2048", "-out", cert, "-keyout", key).CombinedOutput()
	require.NoError(t, err, "%s", out)
	mod := filepath.Join(dir, "m.ko")
	require.NoError(t, os.WriteFile(mod, []byte("\x7fELF module bytes"), 0o644))

	code, _, stderr := runCmd(t, "", "sign-file", "sha256", key, cert, mod, filepath.Join(dir, "signed.ko"))
	require.Equal(t, exitOK, code, stderr)
	data, err := os.ReadFile(filepath.Join(dir, "signed.ko"))
	require.NoError(t, err)
	assert.True(t, signfile.Signed(data))

	code, _, stderr = runCmd(t, "", "sign-file", "md5", key, cert, mod)
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "unsupported hash")
	code, _, stderr = runCmd(t, "", "sign-file", "sha256", key)
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "usage: kmm sign-file")
}
