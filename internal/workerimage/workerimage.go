// Package workerimage builds kmmkit's worker image: for each platform, the
// static worker binary (cmd/kmm-worker) cross-compiled from kmmkit's
// source with the Go toolchain, at /kmm in a FROM-scratch image whose
// entrypoint is "/kmm worker", gathered in one OCI image index. No
// container daemon is involved, and the same source and toolchain give
// the same index digest: the Go builds are reproducible (-trimpath,
// -buildvcs=false, no build ID, a fixed environment) and the image has
// fixed timestamps, owners, modes and order. `kmm image worker` pushes
// it.
package workerimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"debug/elf"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kmmkit/kmmkit/internal/nodecmd"
	"github.com/kmmkit/kmmkit/internal/ociimage"
)

// Module is kmmkit's module path, which the source must hold.
const Module = "github.com/kmmkit/kmmkit"

// Binary is the worker binary's path in the image, the default of
// loader.WithWorkerBinary.
const Binary = "/kmm"

// Entrypoint is the image's entrypoint. kmmkit's worker Pods replace it
// with their command ("/kmm" and "worker load|unload ..."); KMM's
// operator gives only arguments ("kmod load|unload CONFIG ..."), which
// follow it.
var Entrypoint = []string{Binary, "worker"}

// DefaultPlatforms are the platforms built when none are asked for.
var DefaultPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// Options say what to build from.
type Options struct {
	// Source is the root of kmmkit's source, the directory of its go.mod;
	// "" means the directory at or above the working directory that holds
	// kmmkit's go.mod, or else, for a kmm installed from a kmmkit release
	// (go install), that release's copy in the module cache.
	Source string
	// Platforms to build, linux only; nil means DefaultPlatforms.
	Platforms []v1.Platform
	// Go is the go command; "" means "go" on PATH.
	Go string
	// CABundle, when set, is PEM certificates the worker trusts besides
	// the roots built into it (Mozilla's, golang.org/x/crypto/x509roots/
	// fallback), such as a private registry's CA: it is laid at
	// nodecmd.ImageCABundle, which the worker reads.
	CABundle []byte
	// Log receives a line per platform built.
	Log logr.Logger
}

// Build cross-compiles the worker binary for each platform and returns
// the index of the images holding it, sorted by platform.
func Build(ctx context.Context, opts Options) (v1.ImageIndex, error) {
	platforms, err := normalize(opts.Platforms)
	if err != nil {
		return nil, err
	}
	if opts.CABundle != nil {
		if err := checkCABundle(opts.CABundle); err != nil {
			return nil, err
		}
	}
	goTool := opts.Go
	if goTool == "" {
		goTool = "go"
	}
	if goTool, err = exec.LookPath(goTool); err != nil {
		return nil, fmt.Errorf("building the worker binary needs a Go toolchain: %w", err)
	}
	src := opts.Source
	if src == "" {
		if src, err = findSource(goTool); err != nil {
			return nil, err
		}
	} else if err := checkSource(src); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "kmmkit-worker-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		bin, err := compile(ctx, goTool, src, p, filepath.Join(tmp, p.Architecture+p.Variant))
		if err != nil {
			return nil, err
		}
		img, err := Image(p, bin, opts.CABundle)
		if err != nil {
			return nil, fmt.Errorf("worker image for %s: %w", p, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		opts.Log.Info("built the worker image", "platform", p.String(), "digest", d.String(), "binaryBytes", len(bin))
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx, nil
}

// normalize checks, sorts and deduplicates the platforms.
func normalize(in []v1.Platform) ([]v1.Platform, error) {
	if len(in) == 0 {
		in = DefaultPlatforms
	}
	var out []v1.Platform
	for _, p := range in {
		if p.OS != "linux" {
			return nil, fmt.Errorf("platform %s: the worker runs on Linux only", p)
		}
		if _, err := goArch(p); err != nil {
			return nil, err
		}
		q := v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
		if !slices.ContainsFunc(out, q.Equals) {
			out = append(out, q)
		}
	}
	slices.SortFunc(out, func(a, b v1.Platform) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// goArch returns the GOARCH and the architecture-level variable of p
// (the baseline level, whatever the caller's environment says).
func goArch(p v1.Platform) ([]string, error) {
	if p.Architecture == "" {
		return nil, fmt.Errorf("platform %q: no architecture (such as linux/amd64)", p.String())
	}
	env := []string{"GOARCH=" + p.Architecture}
	switch p.Architecture {
	case "amd64":
		env = append(env, "GOAMD64=v1")
	case "arm64":
		env = append(env, "GOARM64=v8.0")
	}
	switch {
	case p.Architecture == "arm" && p.Variant == "":
		return nil, fmt.Errorf("platform %s: name the ARM version (linux/arm/v6 or linux/arm/v7)", p)
	case p.Architecture == "arm":
		v := strings.TrimPrefix(p.Variant, "v")
		if v != "5" && v != "6" && v != "7" {
			return nil, fmt.Errorf("platform %s: unknown ARM version %q", p, p.Variant)
		}
		env = append(env, "GOARM="+v)
	case p.Architecture == "arm64" && p.Variant != "" && p.Variant != "v8":
		return nil, fmt.Errorf("platform %s: only arm64/v8 is built", p)
	case p.Architecture != "arm64" && p.Variant != "":
		return nil, fmt.Errorf("platform %s: variants are for arm only", p)
	}
	if _, ok := elfMachines[p.Architecture]; !ok {
		return nil, fmt.Errorf("platform %s: unknown architecture %q (amd64, arm64, arm, ppc64le, s390x, riscv64, 386)", p, p.Architecture)
	}
	return env, nil
}

// elfMachines is the ELF machine of each architecture built.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM, "ppc64le": elf.EM_PPC64,
	"s390x": elf.EM_S390, "riscv64": elf.EM_RISCV, "386": elf.EM_386,
}

// buildEnv are the variables of the caller's environment that would make
// the build depend on more than the source and the toolchain; compile
// sets them itself.
var buildEnv = []string{"GOFLAGS", "GOOS", "GOARCH", "GOARM", "GOARM64", "GOAMD64", "CGO_ENABLED", "GOWORK"}

// compile builds cmd/kmm-worker for p into out and returns the binary,
// checked to be a static executable of p's machine.
func compile(ctx context.Context, goTool, src string, p v1.Platform, out string) ([]byte, error) {
	arch, _ := goArch(p)
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(buildEnv, k)
	})
	env = append(env, append([]string{"GOOS=linux", "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly"}, arch...)...)
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=",
		"-o", out, "./cmd/kmm-worker")
	cmd.Dir, cmd.Env = src, env
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building the worker binary for %s in %s: %w\n%s", p, src, err, bytes.TrimSpace(stderr.Bytes()))
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if err := CheckStatic(bin, p); err != nil {
		return nil, fmt.Errorf("the worker binary built for %s: %w", p, err)
	}
	return bin, nil
}

// CheckStatic checks that bin is a statically linked ELF executable for
// p: its machine is p's, and it has no interpreter (PT_INTERP) and needs
// no shared library (DT_NEEDED). A static position-independent executable
// (ET_DYN, the default on some platforms) is one too.
func CheckStatic(bin []byte, p v1.Platform) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	if want := elfMachines[p.Architecture]; f.Machine != want {
		return fmt.Errorf("ELF machine %s, want %s", f.Machine, want)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %s, not an executable", f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked: it has an interpreter (PT_INTERP)")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("reading its dynamic section: %w", err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("dynamically linked: it needs %s", strings.Join(libs, ", "))
	}
	return nil
}

// Image returns the FROM-scratch image of the worker binary bin for p: bin
// at /kmm (root-owned, mode 0755), an empty /tmp (mode 1777), caBundle (if
// any) at nodecmd.ImageCABundle, and the entrypoint "/kmm worker", with
// every timestamp at the Unix epoch.
func Image(p v1.Platform, bin, caBundle []byte) (v1.Image, error) {
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	entries := []entry{
		{tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(Binary, "/"), Mode: 0o755}, bin},
		{tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil},
	}
	if caBundle != nil {
		file := strings.TrimPrefix(nodecmd.ImageCABundle, "/")
		for d := path.Dir(file); d != "."; d = path.Dir(d) {
			entries = append(entries, entry{tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}, nil})
		}
		entries = append(entries, entry{tar.Header{Typeflag: tar.TypeReg, Name: file, Mode: 0o644}, caBundle})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.hdr.Name, b.hdr.Name) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime, h.Format, h.Size = ociimage.Epoch, tar.FormatPAX, int64(len(e.body))
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return ociimage.Image(ociimage.Spec{
		Layer: buf.Bytes(), Platform: p,
		History: v1.History{Author: "kmmkit", CreatedBy: "kmm image worker: " + Binary, Comment: "kmmkit's worker binary"},
		Config:  func(c *v1.Config) { *c = v1.Config{Entrypoint: Entrypoint, WorkingDir: "/"} },
	})
}

// checkCABundle checks that data is PEM holding only certificates, at
// least one.
func checkCABundle(data []byte) error {
	n := 0
	for rest := data; ; n++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return fmt.Errorf("CA bundle: certificate %d is not PEM", n+1)
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("CA bundle: block %d is a %s, not a CERTIFICATE", n+1, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("CA bundle: certificate %d: %w", n+1, err)
		}
	}
	if n == 0 {
		return errors.New("CA bundle holds no PEM certificate")
	}
	return nil
}

// findSource returns the root of kmmkit's source: the directory, at or
// above the working directory, whose go.mod is kmmkit's; else, when this
// program was built from a released kmmkit (go install), that version's
// copy in goTool's module cache.
func findSource(goTool string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if checkSource(dir) == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Path == Module && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		if out, err := exec.Command(goTool, "env", "GOMODCACHE").Output(); err == nil {
			dir := filepath.Join(strings.TrimSpace(string(out)), Module+"@"+bi.Main.Version)
			if checkSource(dir) == nil {
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("kmmkit's source not found at or above %s: run this in a checkout of %s or pass --source DIR", wd, Module)
}

// checkSource checks that dir holds kmmkit's go.mod and the worker's main.
func checkSource(dir string) error {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return fmt.Errorf("%s is not kmmkit's source: %w", dir, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	module := ""
	for sc.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			module = strings.Trim(strings.TrimSpace(m), `"`)
			break
		}
	}
	if module != Module {
		return fmt.Errorf("%s is not kmmkit's source: its go.mod is module %q, not %s", dir, module, Module)
	}
	if _, err := os.Stat(filepath.Join(dir, "cmd", "kmm-worker", "main.go")); err != nil {
		return fmt.Errorf("%s has no worker binary's source (cmd/kmm-worker): %w", dir, err)
	}
	return nil
}
