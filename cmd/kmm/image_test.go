package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/faultproxy"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

func TestImageCheckInProcess(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(64, 1)
	require.NoError(t, err)
	ref, err := name.ParseReference(host+"/kmm/mod:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img))
	digest, err := img.Digest()
	require.NoError(t, err)

	code, out, stderr := runCmd(t, "", "image", "check", host+"/kmm/mod:v1", "--insecure")
	assert.Equal(t, exitOK, code, stderr)
	assert.Equal(t, digest.String()+"\n", out)

	code, out, _ = runCmd(t, "", "image", "check", "--insecure", host+"/kmm/mod:v2")
	assert.Equal(t, exitNo, code)
	assert.Contains(t, out, "not found: "+host+"/kmm/mod:v2")

	code, _, stderr = runCmd(t, "", "image", "check", host+"/kmm/mod:v1")
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "TLSError")

	code, _, stderr = runCmd(t, "", "image", "check", "Not/A:Valid:Ref")
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "InvalidReference")

	code, _, stderr = runCmd(t, "", "image", "check", "--ca-file", "/nonexistent", host+"/kmm/mod:v1")
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "/nonexistent")
}

func TestImageCheckRealRegistry(t *testing.T) {
	regs := testenv.Registry(t)
	ref := fmt.Sprintf("%s/kmmkit-cli-%d/mod:v1", regs.TLS, rand.Uint32())
	img, err := random.Image(64, 1)
	require.NoError(t, err)
	r, err := name.ParseReference(ref)
	require.NoError(t, err)
	ca, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	// The push skips verification; the checks below do not.
	require.NoError(t, remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: regs.User, Password: regs.Password}),
		remote.WithTransport(insecureTransport())))
	digest, err := img.Digest()
	require.NoError(t, err)

	dir := t.TempDir()
	good := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(good, []byte(fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, regs.TLS, regs.User, regs.Password)), 0o600))
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca, 0o600))

	code, out, stderr := runCmd(t, "", "image", "check", ref, "--ca-file", caFile, "--docker-config", good)
	assert.Equal(t, exitOK, code, stderr)
	assert.Equal(t, digest.String()+"\n", out)

	code, _, stderr = runCmd(t, "", "image", "check", ref, "--ca-file", caFile)
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "Unauthorized")

	code, _, stderr = runCmd(t, "", "image", "check", ref, "--docker-config", good)
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "TLSError")

	code, out, _ = runCmd(t, "", "image", "check", ref, "--skip-tls-verify", "--docker-config", good)
	assert.Equal(t, exitOK, code)
	assert.Equal(t, digest.String()+"\n", out)
}

// TestImageCheckHostileRegistries runs faultproxy's cases through the
// CLI against the real docker-registry: the exit status, the message, and
// a bounded time.
func TestImageCheckHostileRegistries(t *testing.T) {
	for _, tc := range faultproxy.Cases() {
		t.Run(tc.Name, func(t *testing.T) {
			p, img := tc.Arrange(t)
			args := []string{"image", "check", img.Ref, "--idle-timeout", faultproxy.IdleTimeout.String()}
			if p.TLS {
				dir := t.TempDir()
				ca, cfg := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "config.json")
				require.NoError(t, os.WriteFile(ca, p.CAPEM(), 0o600))
				require.NoError(t, os.WriteFile(cfg, p.DockerConfig(), 0o600))
				args = append(args, "--ca-file", ca, "--docker-config", cfg)
			} else {
				args = append(args, "--insecure")
			}
			start := time.Now()
			code, out, stderr := runCmd(t, "", args...)
			elapsed := time.Since(start)
			assert.Equal(t, tc.Exit, code, "stdout %q, stderr %q", out, stderr)
			msg := stderr
			if tc.Exit == exitNo {
				msg = out
				assert.Contains(t, out, "not found: "+img.Ref)
			} else {
				assert.Contains(t, stderr, string(tc.Reason))
			}
			for _, s := range tc.Text {
				assert.Contains(t, msg, s)
			}
			for _, s := range append(tc.Hidden, p.Password()) {
				assert.NotContains(t, out+stderr, s)
			}
			assert.Less(t, elapsed, tc.MaxTime)
		})
	}
}

// TestImageCheckRefusesUntaggedReferences: as validate does, and before
// asking any registry (a registry would answer for :latest).
func TestImageCheckRefusesUntaggedReferences(t *testing.T) {
	var requests atomic.Int32
	reg := ggcrregistry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(64, 1)
	require.NoError(t, err)
	ref, err := name.ParseReference(host+"/kmm/mod:latest", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img))
	requests.Store(0)

	for _, untagged := range []string{host + "/kmm/mod", "registry:5000/kmm/mod", "mod"} {
		code, out, stderr := runCmd(t, "", "image", "check", untagged, "--insecure")
		assert.Equal(t, exitError, code, untagged)
		assert.Empty(t, out)
		assert.Equal(t, "kmm image check: "+untagged+": InvalidReference (container image must explicitly set a tag or digest)\n", stderr)
	}
	code, _, stderr := runCmd(t, "", "image", "check", host+"/kmm/mod:v1 x", "--insecure")
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "InvalidReference (must not contain whitespace)")
	assert.Zero(t, requests.Load(), "no registry was asked")

	code, out, stderr := runCmd(t, "", "image", "check", host+"/kmm/mod:latest", "--insecure")
	assert.Equal(t, exitOK, code, stderr)
	d, err := img.Digest()
	require.NoError(t, err)
	assert.Equal(t, d.String()+"\n", out, "an explicit :latest is checked")
}
