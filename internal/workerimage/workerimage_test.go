package workerimage

import (
	"archive/tar"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/elftest"
)

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// TestImage: the image is the binary at /kmm and an empty /tmp, owned by
// root, with fixed timestamps, the worker's entrypoint and OCI media
// types; the same binary gives the same digest, another binary another.
func TestImage(t *testing.T) {
	bin := []byte("\x7fELF a worker binary")
	img, err := Image(amd64, bin, nil)
	require.NoError(t, err)
	again, err := Image(amd64, bin, nil)
	require.NoError(t, err)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := again.Digest()
	require.NoError(t, err)
	assert.Equal(t, d1, d2, "the same binary, the same image")
	other, err := Image(amd64, []byte("\x7fELF another binary"), nil)
	require.NoError(t, err)
	d3, err := other.Digest()
	require.NoError(t, err)
	assert.NotEqual(t, d1, d3)
	arm, err := Image(v1.Platform{OS: "linux", Architecture: "arm64"}, bin, nil)
	require.NoError(t, err)
	d4, err := arm.Digest()
	require.NoError(t, err)
	assert.NotEqual(t, d1, d4, "the platform is in the config")

	mt, err := img.MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCIManifestSchema1, mt)
	m, err := img.Manifest()
	require.NoError(t, err)
	assert.Equal(t, types.OCIConfigJSON, m.Config.MediaType)
	require.Len(t, m.Layers, 1)
	assert.Equal(t, types.OCILayer, m.Layers[0].MediaType)

	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, []string{"/kmm", "worker"}, cfg.Config.Entrypoint)
	assert.Empty(t, cfg.Config.Cmd)
	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, "amd64", cfg.Architecture)
	assert.True(t, cfg.Created.Time.Equal(time.Unix(0, 0)), "created %s", cfg.Created)
	for _, h := range cfg.History {
		assert.True(t, h.Created.Time.Equal(time.Unix(0, 0)), "history created %s", h.Created)
	}

	layers, err := img.Layers()
	require.NoError(t, err)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	type entry struct {
		name     string
		mode     int64
		uid, gid int
		mtime    int64
		body     string
	}
	var got []entry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		body, err := io.ReadAll(tr)
		require.NoError(t, err)
		got = append(got, entry{h.Name, h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), string(body)})
	}
	assert.Equal(t, []entry{{"kmm", 0o755, 0, 0, 0, string(bin)}, {"tmp/", 0o1777, 0, 0, 0, ""}}, got)

	withCA, err := Image(amd64, bin, []byte(testCA))
	require.NoError(t, err)
	d5, err := withCA.Digest()
	require.NoError(t, err)
	assert.NotEqual(t, d1, d5)
	assert.Equal(t, []string{"etc/ 0755", "etc/kmmkit/ 0755", "etc/kmmkit/ca-bundle.crt 0644 " + strings.TrimSpace(testCA), "kmm 0755 " + string(bin), "tmp/ 1777"},
		layerEntries(t, withCA), "sorted, with the directories of the CA bundle")
}

// layerEntries lists the entries of the image's one layer: name, mode and
// content.
func layerEntries(t *testing.T, img v1.Image) []string {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		body, err := io.ReadAll(tr)
		require.NoError(t, err)
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %04o %s", h.Name, h.Mode, body)))
	}
}

// testCA is a self-signed CA certificate.
var testCA = func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kmmkit test CA"}, IsCA: true,
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0), BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}()

// TestCABundle: Build refuses a CA bundle that is not PEM certificates
// before it builds anything.
func TestCABundle(t *testing.T) {
	require.NoError(t, checkCABundle([]byte(testCA+testCA)))
	for bundle, want := range map[string]string{
		"":              "CA bundle holds no PEM certificate",
		"not pem":       "CA bundle: certificate 1 is not PEM",
		testCA + "junk": "CA bundle: certificate 2 is not PEM",
		"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n": "CA bundle: block 1 is a PRIVATE KEY, not a CERTIFICATE",
		"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n": "CA bundle: certificate 1: x509: ",
	} {
		assert.ErrorContains(t, checkCABundle([]byte(bundle)), want, "%q", bundle)
		_, err := Build(context.Background(), Options{CABundle: []byte(bundle), Log: logr.Discard()})
		assert.ErrorContains(t, err, want)
	}
}

func TestPlatforms(t *testing.T) {
	got, err := normalize([]v1.Platform{{OS: "linux", Architecture: "arm64"}, amd64, {OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}})
	require.NoError(t, err)
	assert.Equal(t, []v1.Platform{amd64, {OS: "linux", Architecture: "arm", Variant: "v7"}, {OS: "linux", Architecture: "arm64"}}, got,
		"sorted, each once")
	got, err = normalize(nil)
	require.NoError(t, err)
	assert.Equal(t, DefaultPlatforms, got)

	for p, want := range map[string]string{
		"windows/amd64": "platform windows/amd64: the worker runs on Linux only",
		"linux/arm":     "platform linux/arm: name the ARM version (linux/arm/v6 or linux/arm/v7)",
		"linux/arm/v9":  `platform linux/arm/v9: unknown ARM version "v9"`,
		"linux/amd64/x": "platform linux/amd64/x: variants are for arm only",
		"linux/mips":    `platform linux/mips: unknown architecture "mips"`,
		"linux":         `platform "linux": no architecture (such as linux/amd64)`,
	} {
		pl, err := v1.ParsePlatform(p)
		require.NoError(t, err)
		_, err = normalize([]v1.Platform{*pl})
		assert.ErrorContains(t, err, want)
	}
}

// TestCheckStatic refuses what cannot run in a FROM-scratch image: a
// dynamically linked program, another machine's, a file that is not an
// executable.
func TestCheckStatic(t *testing.T) {
	ls, err := os.ReadFile("/bin/ls")
	require.NoError(t, err, "a dynamically linked program of this machine")
	assert.ErrorContains(t, CheckStatic(ls, amd64), "dynamically linked: it has an interpreter (PT_INTERP)")
	assert.EqualError(t, CheckStatic(ls, v1.Platform{OS: "linux", Architecture: "arm64"}), "ELF machine EM_X86_64, want EM_AARCH64")
	assert.EqualError(t, CheckStatic(elftest.Module{}.Bytes(), amd64), "ELF type ET_REL, not an executable")
	assert.ErrorContains(t, CheckStatic([]byte("#!/bin/sh\n"), amd64), "not an ELF file")
}

// TestSource: Build says what it needs, before it builds anything.
func TestSource(t *testing.T) {
	ctx := context.Background()
	none := t.TempDir()
	_, err := Build(ctx, Options{Source: none, Log: logr.Discard()})
	assert.ErrorContains(t, err, none+" is not kmmkit's source: open "+filepath.Join(none, "go.mod"))

	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n\ngo 1.26\n"), 0o644))
	_, err = Build(ctx, Options{Source: other, Log: logr.Discard()})
	assert.EqualError(t, err, other+` is not kmmkit's source: its go.mod is module "example.com/other", not github.com/kmmkit/kmmkit`)

	old := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(old, "go.mod"), []byte("// kmmkit\nmodule github.com/kmmkit/kmmkit\n"), 0o644))
	_, err = Build(ctx, Options{Source: old, Log: logr.Discard()})
	assert.ErrorContains(t, err, old+" has no worker binary's source (cmd/kmm-worker)")

	_, err = Build(ctx, Options{Go: filepath.Join(none, "no-go"), Log: logr.Discard()})
	assert.ErrorContains(t, err, "building the worker binary needs a Go toolchain")

	_, err = Build(ctx, Options{Platforms: []v1.Platform{{OS: "darwin", Architecture: "arm64"}}, Log: logr.Discard()})
	assert.EqualError(t, err, "platform darwin/arm64: the worker runs on Linux only")

	wd, err := os.Getwd()
	require.NoError(t, err)
	found, err := findSource("go")
	require.NoError(t, err)
	assert.Equal(t, filepath.Dir(filepath.Dir(wd)), found, "the checkout this test runs in")
}
