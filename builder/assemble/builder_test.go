package assemble

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// countingRegistry is an in-process registry that counts manifest pushes.
func countingRegistry(t *testing.T) (host string, pushes *atomic.Int32) {
	pushes = new(atomic.Int32)
	inner := ggcrregistry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			pushes.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), pushes
}

func buildRequest(t *testing.T, image string) builder.Request {
	k, err := kernelmap.ParseKernel(kver)
	require.NoError(t, err)
	return builder.Request{Namespace: "drivers", Module: "nic", Kernel: k, Image: image,
		RegistryTLS: v1beta1.TLSOptions{Insecure: true}, FirmwarePath: "/firmware"}
}

func TestBuilderFromDirectory(t *testing.T) {
	ctx := context.Background()
	host, pushes := countingRegistry(t)
	dir := t.TempDir()
	for _, f := range synthetic() {
		p := filepath.Join(dir, kver, f.Path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, f.Data, 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "firmware", "acme"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "firmware", "acme", "fw.bin"), []byte("FW"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, kver, "README"), []byte("not a module"), 0o644))

	client, err := registry.NewClient()
	require.NoError(t, err)
	req := buildRequest(t, host+"/acme/nic:"+kver)
	b, err := New(client, DirSource(dir))
	require.NoError(t, err)
	st, err := b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
	assert.Equal(t, int32(1), pushes.Load())

	// Another builder, same inputs: the same digest, and no second push.
	second, err := New(client, DirSource(dir))
	require.NoError(t, err)
	again, err := second.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, st.Digest, again.Digest, "reproducible")
	assert.Equal(t, int32(1), pushes.Load(), "the registry already has it")

	dest := t.TempDir()
	_, err = client.Extract(ctx, registry.Request{Image: req.Image, TLS: req.RegistryTLS}, dest,
		registry.ExtractOptions{KernelVersion: kver, FirmwarePath: "/firmware"})
	require.NoError(t, err)
	for _, p := range []string{"opt/lib/modules/" + kver + "/extra/kmm_ci_a.ko", "opt/lib/modules/" + kver + "/modules.dep.bin", "firmware/acme/fw.bin"} {
		assert.FileExists(t, filepath.Join(dest, p))
	}
	assert.NoFileExists(t, filepath.Join(dest, "opt/lib/modules/"+kver+"/README"))

	other := req
	other.Kernel, _ = kernelmap.ParseKernel("6.1.0-99-amd64")
	st, err = b.Sync(ctx, other)
	assert.ErrorContains(t, err, "no prebuilt modules for kernel 6.1.0-99-amd64")
	assert.Equal(t, reason.BuildFailed, st.Reason)
	assert.True(t, st.Final)
}

// TestBuilderFromImage takes the modules from a builder stage's image.
func TestBuilderFromImage(t *testing.T) {
	ctx := context.Background()
	host, _ := countingRegistry(t)
	client, err := registry.NewClient()
	require.NoError(t, err)
	// A "builder stage" image: modules under /usr/src/out/<kver>.
	stage, err := Assemble(ctx, Input{KernelVersion: kver, DirName: "/usr/src/out", Modules: synthetic()})
	require.NoError(t, err)
	tls := v1beta1.TLSOptions{Insecure: true}
	_, err = client.Push(ctx, registry.Request{Image: host + "/acme/nic-builder:" + kver, TLS: tls}, stage)
	require.NoError(t, err)

	src := ImageSource(client, registry.Request{Image: host + "/acme/nic-builder:${KERNEL_FULL_VERSION}", TLS: tls},
		"/usr/src/out/lib/modules/${KERNEL_FULL_VERSION}/extra")
	req := buildRequest(t, host+"/acme/nic:"+kver)
	b, err := New(client, src)
	require.NoError(t, err)
	st, err := b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
	img, _, err := client.Pull(ctx, registry.Request{Image: req.Image, TLS: tls})
	require.NoError(t, err)
	fs := files(t, img)
	assert.Contains(t, fs, "opt/lib/modules/"+kver+"/kmm_ci_a.ko")
	assert.Equal(t, "kmm_ci_b.ko:\nkmm_ci_a.ko: kmm_ci_b.ko\n", string(fs["opt/lib/modules/"+kver+"/modules.dep"]))

	b, err = New(client, ImageSource(client, registry.Request{Image: host + "/acme/nic-builder:" + kver, TLS: tls}, "/nothing"))
	require.NoError(t, err)
	_, err = b.Sync(ctx, req)
	assert.ErrorContains(t, err, "has no module files under /nothing")
}

// TestBuilderRefusesAnImageThatCannotLoad: the assembler lints what it
// built and fails the build with the findings, pushing nothing.
func TestBuilderRefusesAnImageThatCannotLoad(t *testing.T) {
	ctx := context.Background()
	host, pushes := countingRegistry(t)
	client, err := registry.NewClient()
	require.NoError(t, err)
	write := func(dir, kernel string, files []File) {
		for _, f := range files {
			p := filepath.Join(dir, kernel, f.Path)
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, f.Data, 0o644))
		}
	}
	const other = "6.1.0-99-amd64"
	k, err := kernelmap.ParseKernel(other)
	require.NoError(t, err)

	// Modules built for kver, put where another kernel's prebuilt
	// modules go.
	dir := t.TempDir()
	write(dir, other, synthetic())
	req := buildRequest(t, host+"/acme/nic:"+other)
	req.Kernel = k
	st, err := mustNew(t, client, DirSource(dir)).Sync(ctx, req)
	require.Error(t, err)
	assert.Equal(t, reason.ImageLintFailed, reason.Of(err))
	assert.Equal(t, builder.PhaseFailed, st.Phase)
	assert.Equal(t, reason.ImageLintFailed, st.Reason)
	assert.True(t, st.Final, "the same inputs fail the same way")
	mdir := "/opt/lib/modules/" + other
	assert.True(t, strings.HasPrefix(st.Message, host+"/acme/nic:"+other+" would not load: 2 finding(s) for "+other+": "+
		mdir+"/extra/kmm_ci_a.ko: vermagic-release: built for kernel "+kver), st.Message)
	assert.Contains(t, st.Message, mdir+"/extra/kmm_ci_b.ko: vermagic-release: ")
	var lerr *lint.Error
	require.ErrorAs(t, err, &lerr)
	assert.Len(t, lerr.Report.Findings, 2)

	// A module that needs one the image lacks; and the Module's module,
	// asked for through WithLint, missing.
	dir = t.TempDir()
	write(dir, kver, []File{{Path: "extra/kmm_ci_a.ko", Data: elftest.Module{
		Modinfo: []string{vermagic, "depends=kmm_ci_b"}, Needs: []elftest.Need{{Name: "b_fn"}}}.Bytes()}})
	req = buildRequest(t, host+"/acme/nic:"+kver)
	st, err = mustNew(t, client, DirSource(dir), WithLint(lint.WithModules("nic"))).Sync(ctx, req)
	require.Error(t, err)
	assert.Equal(t, reason.ImageLintFailed, st.Reason)
	assert.Contains(t, st.Message, "/opt/lib/modules/"+kver+"/extra/kmm_ci_a.ko: dependency: needs module kmm_ci_b (.modinfo depends), which the image does not hold")
	assert.Contains(t, st.Message, "/opt/lib/modules/"+kver+": module-missing: the Module loads nic")

	// Good modules, signed by the build: the lint asks for signatures,
	// finds them, and the image is pushed.
	signer := testSigner(t)
	dir = t.TempDir()
	write(dir, kver, synthetic())
	st, err = mustNew(t, client, DirSource(dir), WithLint(lint.WithModules("kmm_ci_a")),
		WithSigner(func(context.Context, builder.Request) (*signfile.Signer, error) { return signer, nil })).Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
	assert.Equal(t, int32(1), pushes.Load(), "only the good image was pushed")
}

// TestNewNeedsClientAndSource: New names what is missing.
func TestNewNeedsClientAndSource(t *testing.T) {
	client, err := registry.NewClient()
	require.NoError(t, err)
	_, err = New(nil, DirSource(t.TempDir()))
	assert.EqualError(t, err, "assemble: New needs a registry client and a Source")
	_, err = New(client, nil)
	assert.EqualError(t, err, "assemble: New needs a registry client and a Source")
}

// mustNew is New that fails t on an error.
func mustNew(t *testing.T, client *registry.Client, src Source, opts ...Option) *Builder {
	t.Helper()
	b, err := New(client, src, opts...)
	require.NoError(t, err)
	return b
}
