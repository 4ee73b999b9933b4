package assemble

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/internal/ctxlog"
	"github.com/kmmkit/kmmkit/internal/safefs"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// Source supplies the prebuilt files of a build request.
type Source interface {
	// Files returns the module files (paths relative to the kernel's
	// module directory, such as "extra/nic.ko") and firmware files
	// (relative to the firmware path) for req's kernel.
	Files(ctx context.Context, req builder.Request) (modules, firmware []File, err error)
}

// DirSource reads prebuilt modules from a directory: <dir>/<kernel>/…
// holds the modules of each kernel (any .ko, .ko.xz, .ko.zst or .ko.gz,
// at any depth), and <dir>/firmware/… the firmware, if any.
func DirSource(dir string) Source { return dirSource(dir) }

type dirSource string

func (d dirSource) Files(_ context.Context, req builder.Request) ([]File, []File, error) {
	kdir := filepath.Join(string(d), req.Kernel.Version)
	mods, err := readTree(string(d), req.Kernel.Version, isModule)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no prebuilt modules for kernel %s: %s does not exist", req.Kernel.Version, kdir)
	}
	if err != nil {
		return nil, nil, err
	}
	if len(mods) == 0 {
		return nil, nil, fmt.Errorf("no module files (*.ko, *.ko.xz, *.ko.zst, *.ko.gz) in %s", kdir)
	}
	fw, err := readTree(string(d), "firmware", func(string) bool { return true })
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	return mods, fw, nil
}

func isModule(name string) bool {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// readTree reads the regular files under the directory dir of root that
// keep says to keep, with slash-separated paths relative to dir, in a
// stable order. dir is resolved beneath root, and nothing is read through
// a link: a hostile builder image cannot make the assembler pack a file
// from outside it.
func readTree(root, dir string, keep func(string) bool) ([]File, error) {
	t, err := safefs.Open(root)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	sub, err := t.Sub(dir)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	var out []File
	err = sub.Walk(".", func(name string, e fs.DirEntry) error {
		if !e.Type().IsRegular() || !keep(e.Name()) {
			return nil
		}
		data, err := sub.ReadFile(name)
		if err != nil {
			return err
		}
		out = append(out, File{Path: name, Data: data})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// ImageSource takes prebuilt modules from an image, such as the builder
// stage of a multi-stage build pushed on its own: image and dir may use
// ${KERNEL_FULL_VERSION}, and every module file under dir (at any depth)
// is taken, keeping its path below dir.
func ImageSource(client *registry.Client, image registry.Request, dir string) Source {
	return imageSource{client: client, req: image, dir: dir}
}

type imageSource struct {
	client *registry.Client
	req    registry.Request
	dir    string
}

func (s imageSource) Files(ctx context.Context, req builder.Request) ([]File, []File, error) {
	sub := strings.NewReplacer("${KERNEL_FULL_VERSION}", req.Kernel.Version, "$KERNEL_FULL_VERSION", req.Kernel.Version)
	r := s.req
	r.Image = sub.Replace(r.Image)
	dir := path.Clean("/" + sub.Replace(s.dir))
	tmp, err := os.MkdirTemp("", "kmmkit-source")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	if _, err := s.client.Extract(ctx, r, filepath.Join(tmp, "x"), registry.ExtractOptions{Dirs: []string{dir}}); err != nil {
		return nil, nil, fmt.Errorf("reading modules from %s:%s: %w", r.Image, dir, err)
	}
	mods, err := readTree(filepath.Join(tmp, "x"), dir, isModule)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s has no module files under %s", r.Image, dir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading modules from %s:%s: %w", r.Image, dir, err)
	}
	if len(mods) == 0 {
		return nil, nil, fmt.Errorf("%s has no module files under %s", r.Image, dir)
	}
	return mods, nil, nil
}

// Builder is the daemonless builder.Builder: it assembles the image from
// a Source in-process (signing the modules when WithSigner gives a
// signer), and pushes it unless the registry already holds the same
// digest. The same inputs always give the same digest, so Sync is
// idempotent without any state; it finishes within the call.
type Builder struct {
	client *registry.Client
	source Source
	o      options
}

var _ builder.Builder = (*Builder)(nil)

// Option configures a Builder (see New). Options only record a value.
type Option func(*options)

type options struct {
	push      func(ctx context.Context, req builder.Request) (registry.Request, error)
	signerFor func(ctx context.Context, req builder.Request) (*signfile.Signer, error)
	log       ctxlog.Logger
	lint      []lint.Option
}

// WithLint adds options to the lint every build runs on the image before
// it is pushed (lint.WithModules, lint.WithHostModules,
// lint.WithKernelTree, …). The build always lints, with the request's
// dirName and firmware path, and signed modules when it signs; findings
// fail it with reason.ImageLintFailed.
func WithLint(opts ...lint.Option) Option {
	return func(o *options) { o.lint = append(o.lint, opts...) }
}

// WithPush gives the push credentials and TLS for a request. Without it,
// images are pushed with the request's RegistryTLS and no credentials.
func WithPush(push func(ctx context.Context, req builder.Request) (registry.Request, error)) Option {
	return func(o *options) { o.push = push }
}

// WithSigner gives the signer of a request's modules (nil: no signing).
// Without it, nothing is signed.
func WithSigner(signerFor func(ctx context.Context, req builder.Request) (*signfile.Signer, error)) Option {
	return func(o *options) { o.signerFor = signerFor }
}

// WithLogger makes the Builder log its progress to l. Without it, each
// Sync logs to the logger of its context (logr.FromContextOrDiscard).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// New returns a Builder that takes the modules from source and pushes
// with client; it fails without either.
func New(client *registry.Client, source Source, opts ...Option) (*Builder, error) {
	if client == nil || source == nil {
		return nil, errors.New("assemble: New needs a registry client and a Source")
	}
	b := &Builder{client: client, source: source}
	for _, f := range opts {
		f(&b.o)
	}
	return b, nil
}

// Sync implements builder.Builder.
func (b *Builder) Sync(ctx context.Context, req builder.Request) (builder.Status, error) {
	st := builder.Status{Name: req.Name(1), Hash: req.Hash(), Attempt: 1}
	failed := func(r reason.Reason, err error) (builder.Status, error) {
		st.Phase, st.Reason, st.Message, st.Final = builder.PhaseFailed, r, err.Error(), true
		return st, err
	}
	if err := req.Validate(); err != nil {
		return failed(reason.InvalidRequest, err)
	}
	log := b.o.log.From(ctx)
	mods, fw, err := b.source.Files(ctx, req)
	if err != nil {
		return failed(errReason(err), err)
	}
	in := Input{KernelVersion: req.Kernel.Version, DirName: req.DirName, Modules: mods,
		FirmwarePath: req.FirmwarePath, Firmware: fw, Log: log}
	if len(fw) > 0 && in.FirmwarePath == "" {
		in.Firmware = nil // the Module does not ship firmware
	}
	if b.o.signerFor != nil {
		if in.Signer, err = b.o.signerFor(ctx, req); err != nil {
			return failed(reason.SignFailed, err)
		}
	}
	img, err := assemble(ctx, in, func(root string) error { return b.lint(ctx, req, in, root) })
	if err != nil {
		return failed(errReason(err), err)
	}
	d, err := img.Digest()
	if err != nil {
		return failed(reason.BuildFailed, err)
	}
	push := registry.Request{Image: req.Image, TLS: req.RegistryTLS}
	if b.o.push != nil {
		if push, err = b.o.push(ctx, req); err != nil {
			return failed(errReason(err), err)
		}
	}
	if res, err := b.client.Verify(ctx, push); err == nil && res.Exists && res.Digest == d.String() {
		st.Phase, st.Digest = builder.PhaseSucceeded, d.String()
		return st, nil
	}
	digest, err := b.client.Push(ctx, push, img)
	if err != nil {
		st.Final = false
		st.Phase, st.Reason, st.Message = builder.PhaseFailed, errReason(err), err.Error()
		return st, err
	}
	log.Info("assembled and pushed", "image", req.Image, "digest", digest, "modules", len(mods))
	st.Phase, st.Digest = builder.PhaseSucceeded, digest
	return st, nil
}

// lint lints the staged image at root for the request's kernel, and
// returns the findings as a *lint.Error: the assembler does not push an
// image that cannot load.
func (b *Builder) lint(ctx context.Context, req builder.Request, in Input, root string) error {
	opts := []lint.Option{lint.WithDirName(in.DirName), lint.WithFirmwarePath(req.FirmwarePath)}
	if in.Signer != nil {
		opts = append(opts, lint.WithSigned())
	}
	rep, err := lint.Tree(ctx, root, req.Kernel.Version, append(opts, b.o.lint...)...)
	if err != nil {
		return fmt.Errorf("linting the image for %s: %w", req.Image, err)
	}
	rep.Source = req.Image
	return rep.Err()
}

// errReason is the reason err carries: the registry's for a failed push
// or pull (Unauthorized, TLSError, …), UnsafeImage or ImageCorrupt for a
// builder image refused on extraction; BuildFailed when it carries none.
func errReason(err error) reason.Reason {
	if r := reason.Of(err); r != "" {
		return r
	}
	return reason.BuildFailed
}
