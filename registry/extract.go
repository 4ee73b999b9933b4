package registry

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kmmkit/kmmkit/internal/safefs"
	"github.com/kmmkit/kmmkit/reason"
)

// ExtractOptions say what to take from a kernel-module image, and the
// limits an image must stay within.
type ExtractOptions struct {
	// DirName is modprobe.dirName; "" means "/opt".
	DirName string
	// KernelVersion selects <DirName>/lib/modules/<KernelVersion>.
	KernelVersion string
	// FirmwarePath, when set, is a directory of the image extracted too.
	FirmwarePath string
	// Dirs are further image directories extracted as they are (such as a
	// builder stage's output). With Dirs set and KernelVersion empty,
	// only Dirs are extracted.
	Dirs []string
	// MaxEntrySize bounds one file; 0 means 1 GiB.
	MaxEntrySize int64
	// MaxTotalSize bounds all files together (every file written, over
	// all layers); 0 means 4 GiB.
	MaxTotalSize int64
	// MaxEntries bounds the entries extracted over all layers: files,
	// directories (with those created for an entry's path), links and
	// whiteouts applied; 0 means 100,000.
	MaxEntries int
	// MaxPathDepth bounds the number of elements of an entry's path (a
	// link's target may have twice as many); 0 means 64.
	MaxPathDepth int
}

// ExtractResult describes an extraction.
type ExtractResult struct {
	// Digest is the digest of the image manifest that was extracted.
	Digest string
	// Files and Bytes count the regular files extracted.
	Files int
	Bytes int64
	// Skipped names the absolute symbolic links that were not created
	// (such as the build and source links of a copied /lib/modules tree):
	// they point into the host, never into the image, so they are left
	// out rather than failing the extraction.
	Skipped []string
}

// ErrUnsafeEntry is wrapped by every error about an image entry that is
// refused: a path or link that leads outside the extraction, a device
// node, an entry the file system cannot hold as named, or one past a size,
// count or depth limit. reason.Of gives reason.UnsafeImage for it.
var ErrUnsafeEntry = errors.New("unsafe image entry")

// ErrDigestMismatch is wrapped by every error about a layer whose content
// does not match its digest (the compressed blob) or its diff ID (the
// uncompressed tar), or that cannot be read as a compressed tar at all: a
// tampered, truncated or corrupt layer. reason.Of gives
// reason.ImageCorrupt for it.
var ErrDigestMismatch = errors.New("corrupt layer")

// Extract pulls req.Image and writes only its module tree
// (<dirName>/lib/modules/<kver>) and, when asked, its firmware directory
// and Dirs into dest, keeping their paths: dest/opt/lib/modules/<kver>/...
// Layers are applied in order with their whiteouts. Nothing is executed
// and no shell or cp is needed in the image, so FROM scratch images work.
//
// The image is hostile input. Every entry is created through a directory
// descriptor of a fresh staging directory beside dest, resolved beneath it
// by the kernel (internal/safefs), so no symbolic link (chained, absolute,
// or with more ".." than it has parents), hard link or whiteout reaches
// anything outside it; relative links that would lead out are refused, and
// so is any link that does once all layers are applied. Absolute links can
// only point into the host, so they are left out (ExtractResult.Skipped). Each layer is read to
// its end and must match its digest and its diff ID. Only then is the
// staging directory renamed into place: dest either keeps its previous
// content or gets the new one whole, and a failure leaves nothing behind.
//
// A refused entry (errors.Is ErrUnsafeEntry, reason.UnsafeImage) or a
// layer that does not match its digests (ErrDigestMismatch,
// reason.ImageCorrupt) fails with an error naming the layer (index and
// digest) and the entry; a local file system failure carries
// reason.LocalIOError; failures to fetch are the registry's (*Error). For
// an image index, the manifest for req.Platform (or this machine's
// platform) is used.
func (c *Client) Extract(ctx context.Context, req Request, dest string, opts ExtractOptions) (*ExtractResult, error) {
	if (opts.KernelVersion == "" && len(opts.Dirs) == 0) || strings.ContainsAny(opts.KernelVersion, "/") || opts.KernelVersion == ".." {
		return nil, fmt.Errorf("extract %s: invalid kernel version %q", req.Image, opts.KernelVersion)
	}
	scope, err := newExtractScope(opts)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", req.Image, err)
	}
	ctx, cancel := deadline(ctx, "extract", c.transferTimeout)
	defer cancel()
	img, digest, err := c.image(ctx, req)
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, classify(req.Image, err, req.Auth)
	}
	if _, err := img.ConfigFile(); err != nil {
		return nil, classify(req.Image, err, req.Auth)
	}
	parent := filepath.Dir(filepath.Clean(dest))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("extract %s: %w", req.Image, localFailure(err))
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dest)+".extract-")
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", req.Image, localFailure(err))
	}
	defer os.RemoveAll(tmp)
	res, err := extractTo(ctx, tmp, scope, opts.limits(), layers)
	if err != nil {
		if !isExtractError(err) && ctx.Err() == nil {
			err = classify(req.Image, err, req.Auth)
		}
		return nil, fmt.Errorf("extract %s: %w", req.Image, err)
	}
	if err := replaceDir(tmp, dest); err != nil {
		return nil, fmt.Errorf("extract %s: %w", req.Image, localFailure(err))
	}
	res.Digest = digest
	return res, nil
}

// extractTo applies layers to the staging directory tmp and counts the
// result.
func extractTo(ctx context.Context, tmp string, scope *extractScope, lim limits, layers []v1.Layer) (*ExtractResult, error) {
	tree, err := safefs.Open(tmp)
	if err != nil {
		return nil, localFailure(err)
	}
	defer tree.Close()
	x := newExtractor(tree, scope, lim)
	if err := x.extractLayers(ctx, layers); err != nil {
		return nil, err
	}
	res := &ExtractResult{Skipped: x.skipped}
	err = tree.Walk(".", func(_ string, d fs.DirEntry) error {
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			res.Files++
			res.Bytes += info.Size()
		}
		return nil
	})
	return res, localFailure(err)
}

// Pull returns the image req names (for an index, the manifest for
// req.Platform or this machine's platform) and its manifest digest. Layers
// are fetched lazily, as they are read.
func (c *Client) Pull(ctx context.Context, req Request) (v1.Image, string, error) {
	return c.image(ctx, req)
}

// image is resolve, refusing an image whose config blob is declared
// larger than a manifest may be: go-containerregistry reads the config
// whole, trusting the size the manifest gives.
func (c *Client) image(ctx context.Context, req Request) (v1.Image, string, error) {
	img, digest, err := c.resolve(ctx, req)
	if err != nil {
		return nil, "", err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, "", classify(req.Image, err, req.Auth)
	}
	if m.Config.Size > c.maxManifest || m.Config.Size < 0 {
		return nil, "", &Error{Reason: reason.UnsafeImage, Image: req.Image,
			Detail: fmt.Sprintf("its config blob %s is declared as %d bytes, more than the %d-byte limit (WithMaxManifestSize)", m.Config.Digest, m.Config.Size, c.maxManifest)}
	}
	return img, digest, nil
}

// resolve resolves req to one image, choosing from an index by platform.
func (c *Client) resolve(ctx context.Context, req Request) (v1.Image, string, error) {
	ref, err := ParseReference(req.Image, req.TLS)
	if err != nil {
		return nil, "", &Error{Reason: ReasonInvalid, Image: req.Image, Err: err}
	}
	p, err := c.puller(req)
	if err != nil {
		return nil, "", classify(req.Image, err, req.Auth)
	}
	d, err := p.Get(ctx, ref)
	if err != nil {
		if notFound(err) {
			return nil, "", &Error{Reason: ReasonNotFound, Image: req.Image, Err: err}
		}
		return nil, "", classify(req.Image, err, req.Auth)
	}
	if !d.MediaType.IsIndex() {
		img, err := d.Image()
		if err != nil {
			return nil, "", classify(req.Image, err, req.Auth)
		}
		return img, d.Digest.String(), nil
	}
	want := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if req.Platform != nil {
		want = *req.Platform
	}
	idx, err := d.ImageIndex()
	if err != nil {
		return nil, "", classify(req.Image, err, req.Auth)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, "", classify(req.Image, err, req.Auth)
	}
	for _, child := range m.Manifests {
		if child.Platform != nil && child.Platform.Satisfies(want) {
			img, err := idx.Image(child.Digest)
			if err != nil {
				return nil, "", classify(req.Image, err, req.Auth)
			}
			return img, child.Digest.String(), nil
		}
	}
	return nil, "", &Error{Reason: ReasonNotFound, Image: req.Image, Detail: "the index has no manifest for " + want.String()}
}

// replaceDir moves the extracted tree to dest, replacing what was there.
func replaceDir(tmp, dest string) error {
	old := ""
	if _, err := os.Lstat(dest); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dest, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dest); err != nil {
		if old != "" {
			os.Rename(old, dest)
		}
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}
