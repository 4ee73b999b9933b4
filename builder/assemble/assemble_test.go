package assemble

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

const kver = "6.1.0-56-amd64"

// vermagic is the vermagic of the synthetic modules: built for kver.
const vermagic = "vermagic=" + kver + " SMP preempt mod_unload modversions "

func synthetic() []File {
	return []File{
		{Path: "extra/kmm_ci_b.ko", Data: elftest.Module{Modinfo: []string{vermagic, "alias=kmm-ci-b"}, Exports: []elftest.Export{{Name: "b_fn"}}}.Bytes()},
		{Path: "extra/kmm_ci_a.ko", Data: elftest.Module{Modinfo: []string{vermagic, "softdep=pre: kmm-ci-b"}, Needs: []elftest.Need{{Name: "b_fn"}}}.Bytes()},
	}
}

// files reads every file of the image's single layer.
func files(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	out := map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		require.NoError(t, err)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			if h.Typeflag == tar.TypeReg {
				data, err := io.ReadAll(tr)
				require.NoError(t, err)
				out[h.Name] = data
			}
		}
		rc.Close()
	}
	return out
}

func TestAssembleIsReproducible(t *testing.T) {
	in := Input{KernelVersion: kver, Modules: synthetic(), FirmwarePath: "/firmware", Firmware: []File{{Path: "acme/fw.bin", Data: []byte("FW")}}}
	a, err := Assemble(context.Background(), in)
	require.NoError(t, err)
	b, err := Assemble(context.Background(), in)
	require.NoError(t, err)
	da, _ := a.Digest()
	db, _ := b.Digest()
	assert.Equal(t, da, db, "the same input gives the same digest")

	fs := files(t, a)
	mods := "opt/lib/modules/" + kver + "/"
	assert.Contains(t, fs, mods+"extra/kmm_ci_a.ko")
	assert.Contains(t, fs, "firmware/acme/fw.bin")
	assert.Equal(t, "extra/kmm_ci_b.ko:\nextra/kmm_ci_a.ko: extra/kmm_ci_b.ko\n", string(fs[mods+"modules.dep"]), "kmod's hash order")
	for _, f := range depmod.OutputFiles() {
		assert.Contains(t, fs, mods+f)
	}
	cfg, err := a.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, "amd64", cfg.Architecture)
	m, err := a.MediaType()
	require.NoError(t, err)
	assert.Equal(t, "application/vnd.oci.image.manifest.v1+json", string(m))

	in.DirName = "/usr/local/kmm"
	c, err := Assemble(context.Background(), in)
	require.NoError(t, err)
	dc, _ := c.Digest()
	assert.NotEqual(t, da, dc)
	assert.Contains(t, files(t, c), "usr/local/kmm/lib/modules/"+kver+"/modules.dep.bin")
}

func TestAssembleBadInput(t *testing.T) {
	_, err := Assemble(context.Background(), Input{KernelVersion: kver, Modules: []File{{Path: "../../etc/x.ko", Data: []byte("x")}}})
	assert.ErrorContains(t, err, `module "../../etc/x.ko"`)
	_, err = Assemble(context.Background(), Input{KernelVersion: kver, Firmware: []File{{Path: "fw.bin"}}})
	assert.ErrorContains(t, err, "without a firmware path")
	_, err = Assemble(context.Background(), Input{KernelVersion: "../x"})
	assert.ErrorContains(t, err, "invalid kernel version")
}

// testSigner is a signer with a key and certificate made by openssl.
func testSigner(t *testing.T) *signfile.Signer {
	t.Helper()
	openssl := testenv.LookPath(t, "openssl", "apt-get install openssl")
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	out, err := exec.Command(openssl, "req", "-new", "-nodes", "-batch", "-x509", "-days", "1", "-subj", "/CN=t",
		"-newkey", "rsa:2048", "-out", cert, "-keyout", key).CombinedOutput()
	require.NoError(t, err, "%s", out)
	signer, err := signfile.LoadSigner(crypto.SHA256, key, cert)
	require.NoError(t, err)
	return signer
}

// TestAssembleSignPushExtract signs, pushes to a registry, and extracts
// the image back the way the loader does.
func TestAssembleSignPushExtract(t *testing.T) {
	signer := testSigner(t)
	img, err := Assemble(context.Background(), Input{KernelVersion: kver, Modules: synthetic(), Signer: signer})
	require.NoError(t, err)

	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/kmm/assembled:" + kver
	client, err := registry.NewClient()
	require.NoError(t, err)
	req := registry.Request{Image: ref, TLS: v1beta1.TLSOptions{Insecure: true}}
	digest, err := client.Push(context.Background(), req, img)
	require.NoError(t, err)
	dest := filepath.Join(t.TempDir(), "kmod")
	res, err := client.Extract(context.Background(), req, dest, registry.ExtractOptions{KernelVersion: kver})
	require.NoError(t, err)
	assert.Equal(t, digest, res.Digest)
	for _, f := range synthetic() {
		data, err := os.ReadFile(filepath.Join(dest, "opt", "lib", "modules", kver, f.Path))
		require.NoError(t, err)
		assert.True(t, signfile.Signed(data), f.Path)
		assert.Equal(t, f.Data, signfile.Unsigned(data))
	}
}

// TestAssembleDepmodEqualsKmod packs Debian modules and compares the
// image's index files with kmod's depmod run on the same modules.
func TestAssembleDepmodEqualsKmod(t *testing.T) {
	kmod := testenv.LookPath(t, "depmod", "apt-get install kmod")
	root, kv := testenv.KernelTree(t)
	var mods []File
	for _, p := range []string{"kernel/crypto/async_tx/async_pq.ko", "kernel/crypto/async_tx/async_xor.ko",
		"kernel/crypto/async_tx/async_tx.ko", "kernel/crypto/xor.ko", "kernel/lib/raid6/raid6_pq.ko", "kernel/lib/crc7.ko"} {
		data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kv, p))
		require.NoError(t, err)
		mods = append(mods, File{Path: p, Data: data})
	}
	img, err := Assemble(context.Background(), Input{KernelVersion: kv, Modules: mods})
	require.NoError(t, err)
	fs := files(t, img)

	base := t.TempDir()
	for _, m := range mods {
		p := filepath.Join(base, "lib", "modules", kv, m.Path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, m.Data, 0o644))
	}
	out, err := exec.Command(kmod, "-b", base, "-C", t.TempDir(), kv).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, f := range depmod.OutputFiles() {
		want, err := os.ReadFile(filepath.Join(base, "lib", "modules", kv, f))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, fs["opt/lib/modules/"+kv+"/"+f]), "%s differs from kmod's", f)
	}
}
