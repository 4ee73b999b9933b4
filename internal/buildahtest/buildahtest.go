// Package buildahtest is the buildah builders' shared integration test:
// a KMM-style multi-stage build of a real out-of-tree module pair,
// pushed to the plain and the TLS registry, read back and compared with
// kmod's depmod. Both the command runner (builder/buildah) and the library
// runner (builder/buildahlib) run it.
package buildahtest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/buildah"
	"github.com/kmmkit/kmmkit/builder/publish"
	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// The Dockerfile has the shape KMM documents: a builder stage that
// compiles the modules against the kernel's headers, and a small final
// stage that copies them to /opt/lib/modules/<kernel> and runs depmod
// (kmmkit's, installed as /sbin/depmod in the final base image).
const dockerfile = `ARG BUILDER_IMAGE
ARG BASE_IMAGE
FROM ${BUILDER_IMAGE} AS builder
ARG KERNEL_FULL_VERSION
RUN test "$(cat /run/secrets/build-token/token)" = s3cret
RUN make -s -C /lib/modules/${KERNEL_FULL_VERSION}/build M=/src modules

FROM ${BASE_IMAGE}
ARG KERNEL_FULL_VERSION
COPY --from=builder /src/kmmkit_a.ko /src/kmmkit_b.ko /opt/lib/modules/${KERNEL_FULL_VERSION}/extra/
RUN depmod -b /opt ${KERNEL_FULL_VERSION}
`

type entry struct {
	name, link string
	mode       int64
	data       []byte
}

// image packs entries into a one-layer image.
func image(t *testing.T, env []string, entries []entry) v1.Image {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: time.Unix(0, 0)}
		switch {
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag = tar.TypeDir
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		require.NoError(t, tw.WriteHeader(h))
		_, err := tw.Write(e.data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	require.NoError(t, err)
	img, err := mutate.AppendLayers(empty.Image, layer)
	require.NoError(t, err)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Config.Env = "linux", "amd64", env
	img, err = mutate.ConfigFile(img, cfg)
	require.NoError(t, err)
	return img
}

// baseImages pushes the two base images the Dockerfile starts from:
//   - a builder image with the module sources in /src and the merged-/usr
//     links, whose toolchain and kernel headers come from the host's /usr
//     (mounted with --volume: this machine cannot pull Debian images);
//   - a final base with the host's dash (and libc) as the shell and
//     kmmkit's static kmm binary as /sbin/depmod: no kmod in the image.
func baseImages(t *testing.T, c *registry.Client, reg registry.Request) (builderImage, baseImage string) {
	ctx := context.Background()
	var src []entry
	for _, f := range []string{"Kbuild", "kmmkit_a.c", "kmmkit_b.c"} {
		data, err := os.ReadFile(filepath.Join(root(t), "loader", "node", "testdata", "kmods", f))
		require.NoError(t, err)
		src = append(src, entry{name: "src/" + f, mode: 0o644, data: data})
	}
	tool := image(t, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, append([]entry{
		{name: "bin", link: "usr/bin"}, {name: "lib", link: "usr/lib"}, {name: "lib64", link: "usr/lib64"},
		{name: "sbin", link: "usr/sbin"}, {name: "usr/", mode: 0o755}, {name: "tmp/", mode: 0o1777}, {name: "src/", mode: 0o755},
	}, src...))

	read := func(p string) []byte {
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		return data
	}
	kmm := filepath.Join(t.TempDir(), "kmm")
	gobin := testenv.LookPath(t, "go", "install Go")
	cmd := exec.Command(gobin, "build", "-C", root(t), "-o", kmm, "./cmd/kmm")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	kmmData, err := os.ReadFile(kmm)
	require.NoError(t, err)
	base := image(t, []string{"PATH=/sbin:/bin"}, []entry{
		{name: "bin/", mode: 0o755}, {name: "bin/sh", mode: 0o755, data: read("/bin/dash")},
		{name: "lib/", mode: 0o755}, {name: "lib/x86_64-linux-gnu/", mode: 0o755},
		{name: "lib/x86_64-linux-gnu/libc.so.6", mode: 0o755, data: read("/lib/x86_64-linux-gnu/libc.so.6")},
		{name: "lib64/", mode: 0o755}, {name: "lib64/ld-linux-x86-64.so.2", mode: 0o755, data: read("/lib64/ld-linux-x86-64.so.2")},
		{name: "sbin/", mode: 0o755}, {name: "sbin/depmod", mode: 0o755, data: kmmData}, {name: "tmp/", mode: 0o1777},
	})
	builderImage, baseImage = reg.Image+"/kmmkit-test/builder:1", reg.Image+"/kmmkit-test/depmod-base:1"
	for ref, img := range map[string]v1.Image{builderImage: tool, baseImage: base} {
		r := reg
		r.Image = ref
		_, err := c.Push(ctx, r, img)
		require.NoError(t, err)
	}
	return builderImage, baseImage
}

// Constructor makes the builder under test from options: buildah.New,
// or buildahlib.New.
type Constructor func(opts ...buildah.Option) (*buildah.Builder, error)

// newBuilder makes a builder with mk, with the test's buildah command,
// storage, volumes, logger and build secret, then opts.
func newBuilder(t *testing.T, mk Constructor, opts ...buildah.Option) *buildah.Builder {
	binary := testenv.LookPath(t, "buildah", "apt-get install buildah runc")
	dir := t.TempDir()
	root, runRoot := filepath.Join(dir, "root"), filepath.Join(dir, "runroot")
	secrets := func(_ context.Context, ns, name string) (map[string][]byte, error) {
		if name != "build-token" {
			return nil, fmt.Errorf("secret %s/%s not found", ns, name)
		}
		return map[string][]byte{"token": []byte("s3cret")}, nil
	}
	t.Cleanup(func() {
		_ = exec.Command(binary, "--root", root, "--runroot", runRoot, "--storage-driver", "vfs", "rm", "--all").Run()
	})
	b, err := mk(append([]buildah.Option{
		buildah.WithBinary(binary), buildah.WithStorage(root, runRoot),
		// Debian points awk, cc and others through /etc/alternatives.
		buildah.WithVolumes("/usr:/usr:ro", "/etc/alternatives:/etc/alternatives:ro"),
		buildah.WithLogger(testr.New(t)), buildah.WithSecrets(secrets),
	}, opts...)...)
	require.NoError(t, err)
	return b
}

func syncUntilDone(t *testing.T, b *buildah.Builder, req builder.Request) builder.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := b.Sync(ctx, req)
	require.NoError(t, err)
	require.Equal(t, builder.PhaseRunning, st.Phase)
	again, err := b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, st.Name, again.Name, "the same build, not a second one")
	require.NoError(t, b.Wait(ctx, req.Image))
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	return st
}

func request(t *testing.T, kver, image string, builderImage, baseImage string) builder.Request {
	k, err := kernelmap.ParseKernel(kver)
	require.NoError(t, err)
	return builder.Request{Namespace: "drivers", Module: "kmmkit", Kernel: k, Image: image, Dockerfile: dockerfile,
		BuildArgs: []v1beta1.BuildArg{{Name: "BUILDER_IMAGE", Value: builderImage}, {Name: "BASE_IMAGE", Value: baseImage}},
		Secrets:   []corev1.LocalObjectReference{{Name: "build-token"}}, BaseImageRegistryTLS: v1beta1.TLSOptions{Insecure: true}}
}

// checkImage extracts the pushed image as the loader does and compares
// its index files with kmod's depmod on the same modules.
func checkImage(t *testing.T, c *registry.Client, req registry.Request, kver, digest string) {
	dest := t.TempDir()
	res, err := c.Extract(context.Background(), req, dest, registry.ExtractOptions{KernelVersion: kver})
	require.NoError(t, err)
	assert.Equal(t, digest, res.Digest)
	modDir := filepath.Join(dest, "opt", "lib", "modules", kver)
	for _, m := range []string{"extra/kmmkit_a.ko", "extra/kmmkit_b.ko"} {
		data, err := os.ReadFile(filepath.Join(modDir, m))
		require.NoError(t, err)
		assert.True(t, bytes.HasPrefix(data, []byte("\x7fELF")), m)
	}
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	require.NoError(t, err)
	assert.Contains(t, string(dep), "extra/kmmkit_a.ko: extra/kmmkit_b.ko\n")

	kmod := testenv.LookPath(t, "depmod", "apt-get install kmod")
	ref := t.TempDir()
	for _, m := range []string{"extra/kmmkit_a.ko", "extra/kmmkit_b.ko"} {
		data, err := os.ReadFile(filepath.Join(modDir, m))
		require.NoError(t, err)
		p := filepath.Join(ref, "lib", "modules", kver, m)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, data, 0o644))
	}
	out, err := exec.Command(kmod, "-b", ref, "-C", t.TempDir(), kver).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, f := range depmod.OutputFiles() {
		want, err := os.ReadFile(filepath.Join(ref, "lib", "modules", kver, f))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(modDir, f))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, got), "%s in the image differs from kmod's", f)
	}
}

// MultiStage builds a real kmod image from a KMM-style Dockerfile with
// buildah (vfs storage, chroot isolation), compiles the module pair
// against Debian's headers, and pushes it to the plain registry and to the
// TLS registry with authentication; then checks that an image that would
// not load is not published, and a failing build.
func MultiStage(t *testing.T, mk Constructor) {
	_, kver := testenv.KernelTree(t)
	_, err := os.Stat("/usr/src/linux-headers-" + kver)
	testenv.Need(t, "linux-headers-"+kver, err == nil, "apt-get install linux-headers-"+kver)
	regs := testenv.Registry(t)
	ca, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	c, err := registry.NewClient(registry.WithCABundle(ca))
	require.NoError(t, err)
	plain := registry.Request{Image: regs.Plain, TLS: v1beta1.TLSOptions{Insecure: true}}
	builderImage, baseImage := baseImages(t, c, plain)

	// Each test binary (the command's, the library's) pushes under its own
	// repository: make test runs them at the same time.
	repo := fmt.Sprintf("kmmkit-test-%d", os.Getpid())

	// Plain registry.
	b := newBuilder(t, mk)
	req := request(t, kver, regs.Plain+"/"+repo+"/kmmkit:"+kver, builderImage, baseImage)
	req.RegistryTLS, req.Modules = v1beta1.TLSOptions{Insecure: true}, []string{"kmmkit_a", "kmmkit_b"}
	st := syncUntilDone(t, b, req)
	require.Equal(t, builder.PhaseSucceeded, st.Phase, "%s\n%s", st.Message, st.LogTail)
	assert.True(t, strings.HasPrefix(st.Digest, "sha256:"), st.Digest)
	checkImage(t, c, registry.Request{Image: req.Image, TLS: req.RegistryTLS}, kver, st.Digest)

	// TLS registry with htpasswd: the CA through --cert-dir, the
	// credentials through an auth file.
	certDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(certDir, "ca.crt"), ca, 0o644))
	auth := []byte(`{"auths":{"` + regs.TLS + `":{"username":"` + regs.User + `","password":"` + regs.Password + `"}}}`)
	tb := newBuilder(t, mk, buildah.WithCertDir(certDir),
		buildah.WithAuth(func(context.Context, builder.Request) ([]byte, error) { return auth, nil }))
	treq := request(t, kver, regs.TLS+"/"+repo+"/kmmkit:"+kver, builderImage, baseImage)
	st = syncUntilDone(t, tb, treq)
	require.Equal(t, builder.PhaseSucceeded, st.Phase, "%s\n%s", st.Message, st.LogTail)
	kc, err := registry.DockerConfigKeychain(auth)
	require.NoError(t, err)
	checkImage(t, c, registry.Request{Image: treq.Image, Auth: registry.AuthInfo{Keychain: kc}}, kver, st.Digest)

	// An image that would not load (its modules under /lib/modules, not
	// <dirName>/lib/modules): the build fails with ImageLintFailed and
	// the finding, finally, and the image is not published at its tag;
	// only the staging tag has it.
	lb := newBuilder(t, mk)
	lreq := request(t, kver, regs.Plain+"/"+repo+"/misplaced:"+kver, builderImage, baseImage)
	lreq.RegistryTLS, lreq.Modules = v1beta1.TLSOptions{Insecure: true}, []string{"kmmkit_a"}
	lreq.Dockerfile = strings.NewReplacer("/opt/lib/modules/", "/lib/modules/", "depmod -b /opt", "depmod -b /").Replace(dockerfile)
	st = syncUntilDone(t, lb, lreq)
	require.Equal(t, builder.PhaseFailed, st.Phase, "%s\n%s", st.Message, st.LogTail)
	assert.Equal(t, reason.ImageLintFailed, st.Reason)
	assert.True(t, st.Final, "the same Dockerfile builds the same image: no retry")
	staging, err := publish.StagingTag(lreq.Image)
	require.NoError(t, err)
	assert.Contains(t, st.Message, staging+" would not load: ")
	assert.Contains(t, st.Message, "/opt/lib/modules/"+kver+": layout: ")
	assert.Contains(t, st.Message, " /lib/modules/"+kver, "the finding says where the modules are")
	t.Logf("the build said: %s", st.Message)
	res, err := c.Verify(context.Background(), registry.Request{Image: lreq.Image, TLS: lreq.RegistryTLS})
	require.NoError(t, err)
	assert.False(t, res.Exists, "not published: a Reconciler never sees it ready")
	res, err = c.Verify(context.Background(), registry.Request{Image: staging, TLS: lreq.RegistryTLS})
	require.NoError(t, err)
	assert.True(t, res.Exists, "the staging tag keeps it, for kmm image lint")

	// A failing build: the log tail names the failure; no retry is left.
	fb := newBuilder(t, mk, buildah.WithRetryPolicy(builder.RetryPolicy{MaxAttempts: 1}))
	freq := request(t, kver, regs.Plain+"/"+repo+"/broken:"+kver, builderImage, baseImage)
	freq.Dockerfile = strings.Replace(dockerfile, "M=/src modules", "M=/src no-such-target", 1)
	st = syncUntilDone(t, fb, freq)
	assert.Equal(t, builder.PhaseFailed, st.Phase)
	assert.True(t, st.Final)
	assert.Contains(t, st.LogTail, "no-such-target")
	assert.Regexp(t, "buildah (bud|build)", st.Message, "the command (bud) or the library (build) names the failing step")
}

// root finds kmmkit's root directory (the one with cmd/kmm) above the
// test's directory.
func root(t *testing.T) string {
	dir, err := os.Getwd()
	require.NoError(t, err)
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "cmd", "kmm", "main.go")); err == nil {
			return d
		}
	}
	t.Fatalf("no kmmkit root above %s", dir)
	return ""
}
