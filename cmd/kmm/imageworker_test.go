package main

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"debug/elf"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

// pulledWorker is what one platform's image of a pulled worker index
// holds.
type pulledWorker struct {
	entrypoint, cmd []string
	binary          []byte
	binaryMode      int64
	tmpMode         int64
}

// pullWorkerIndex pulls the index at ref and returns each platform's
// image content.
func pullWorkerIndex(t *testing.T, ref name.Reference, opts ...remote.Option) (types.MediaType, map[string]pulledWorker) {
	t.Helper()
	idx, err := remote.Index(ref, opts...)
	require.NoError(t, err)
	mt, err := idx.MediaType()
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	out := map[string]pulledWorker{}
	for _, desc := range im.Manifests {
		require.NotNil(t, desc.Platform)
		img, err := idx.Image(desc.Digest)
		require.NoError(t, err)
		cfg, err := img.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, desc.Platform.OS+"/"+desc.Platform.Architecture, cfg.OS+"/"+cfg.Architecture, "the config says the index's platform")
		w := pulledWorker{entrypoint: cfg.Config.Entrypoint, cmd: cfg.Config.Cmd}
		layers, err := img.Layers()
		require.NoError(t, err)
		require.Len(t, layers, 1)
		rc, err := layers[0].Uncompressed()
		require.NoError(t, err)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			switch h.Name {
			case "kmm":
				w.binaryMode = h.Mode
				w.binary, err = io.ReadAll(tr)
				require.NoError(t, err)
			case "tmp/":
				w.tmpMode = h.Mode
			default:
				t.Errorf("unexpected entry %q", h.Name)
			}
		}
		rc.Close()
		out[desc.Platform.String()] = w
	}
	return mt, out
}

// TestImageWorker builds the worker image for amd64 and arm64 from this
// checkout and pushes it to the plain registry and, with a Docker config
// and the CA, to the TLS one with htpasswd; pulls both: each platform's
// image holds at /kmm a static binary for its machine (no interpreter, no
// shared library), with the worker's entrypoint; building again gives
// the same digest.
func TestImageWorker(t *testing.T) {
	regs := testenv.Registry(t)
	testenv.LookPath(t, "go", "a Go toolchain on PATH")
	repo := fmt.Sprintf("kmmkit-worker-%d/kmm-worker:v1", rand.Uint32())

	plain := regs.Plain + "/" + repo
	code, stdout, stderr := runCmd(t, "", "image", "worker", plain, "--platform", "linux/arm64,linux/amd64", "--insecure")
	require.Equal(t, exitOK, code, stderr)
	digest := strings.TrimSpace(stdout)
	require.True(t, strings.HasPrefix(digest, "sha256:"), stdout)
	assert.Contains(t, stderr, `"msg"="built the worker image" "platform"="linux/amd64"`)
	assert.Contains(t, stderr, `"msg"="built the worker image" "platform"="linux/arm64"`)

	ref, err := name.ParseReference(plain, name.Insecure)
	require.NoError(t, err)
	mt, images := pullWorkerIndex(t, ref)
	assert.Equal(t, types.OCIImageIndex, mt)
	require.Len(t, images, 2)
	for platform, machine := range map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64} {
		w, ok := images[platform]
		require.True(t, ok, "the index has %s: %v", platform, images)
		assert.Equal(t, []string{"/kmm", "worker"}, w.entrypoint, platform)
		assert.Empty(t, w.cmd, platform)
		assert.EqualValues(t, 0o755, w.binaryMode, platform)
		assert.EqualValues(t, 0o1777, w.tmpMode, platform)
		f, err := elf.NewFile(bytes.NewReader(w.binary))
		require.NoError(t, err, platform)
		assert.Equal(t, machine, f.Machine, platform)
		for _, p := range f.Progs {
			assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s: statically linked, no interpreter", platform)
		}
		libs, err := f.ImportedLibraries()
		require.NoError(t, err)
		assert.Empty(t, libs, "%s: no DT_NEEDED", platform)
		assert.Nil(t, f.Section(".dynamic"), "%s: no dynamic section", platform)
	}

	// Again, to the TLS registry with credentials: the same digest.
	dir := t.TempDir()
	dockerConfig := filepath.Join(dir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(regs.User + ":" + regs.Password))
	require.NoError(t, os.WriteFile(dockerConfig, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, regs.TLS, auth), 0o600))
	secure := regs.TLS + "/" + repo
	code, stdout, stderr = runCmd(t, "", "image", "worker", secure, "--platform=linux/amd64,linux/arm64", "--docker-config", dockerConfig, "--ca-file", regs.CAFile, "-v", "0")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, digest, strings.TrimSpace(stdout), "rebuilt from the same source: the same digest")
	assert.Empty(t, stderr)

	pem, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	ref, err = name.ParseReference(secure)
	require.NoError(t, err)
	idx, err := remote.Index(ref, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: regs.User, Password: regs.Password}))
	require.NoError(t, err)
	d, err := idx.Digest()
	require.NoError(t, err)
	assert.Equal(t, digest, d.String())

	// Without credentials the TLS registry refuses the push, and says so.
	code, _, stderr = runCmd(t, "", "image", "worker", secure, "--platform", "linux/amd64", "--ca-file", regs.CAFile, "-v", "0")
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "Unauthorized")
}

// TestImageWorkerErrors: bad command lines fail before anything is built.
func TestImageWorkerErrors(t *testing.T) {
	for want, args := range map[string][]string{
		"kmm image worker: no image reference given\nusage: kmm image worker REF":                                   {"image", "worker"},
		`kmm image worker: unexpected argument "b"`:                                                                 {"image", "worker", "a", "b"},
		`kmm image worker: --platform "a/b/c/d": too many slashes`:                                                  {"image", "worker", "r.example.com/w:v1", "--platform", "a/b/c/d"},
		`kmm image worker: --platform "": an empty platform`:                                                        {"image", "worker", "r.example.com/w:v1", "--platform", "linux/amd64,"},
		`kmm image worker: platform "linux": no architecture`:                                                       {"image", "worker", "r.example.com/w:v1", "--platform", "linux"},
		"kmm image worker: platform windows/amd64: the worker runs on Linux only":                                   {"image", "worker", "r.example.com/w:v1", "--platform", "windows/amd64"},
		"kmm image worker: UPPER/w:v1: InvalidReference: could not parse reference":                                 {"image", "worker", "UPPER/w:v1"},
		"kmm image worker: open /nonexistent/ca.pem":                                                                {"image", "worker", "r.example.com/w:v1", "--ca-file", "/nonexistent/ca.pem"},
		"kmm image worker: /nonexistent is not kmmkit's source":                                                     {"image", "worker", "r.example.com/w:v1", "--source", "/nonexistent"},
		"kmm image worker: r.example.com/w: InvalidReference (container image must explicitly set a tag or digest)": {"image", "worker", "r.example.com/w"},
	} {
		code, stdout, stderr := runCmd(t, "", args...)
		assert.Equal(t, exitError, code, want)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, want)
	}
}
