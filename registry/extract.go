package registry

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ExtractOptions say what to take from a kernel-module image.
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
	// MaxTotalSize bounds all files together; 0 means 4 GiB.
	MaxTotalSize int64
}

// ExtractResult describes an extraction.
type ExtractResult struct {
	// Digest is the digest of the image manifest that was extracted.
	Digest string
	// Files and Bytes count the regular files extracted.
	Files int
	Bytes int64
}

// ErrUnsafeEntry is wrapped by every error about an image entry that is
// refused: path traversal, escaping or absolute links, device nodes,
// oversized files.
var ErrUnsafeEntry = errors.New("unsafe image entry")

// Extract pulls req.Image and writes only its module tree
// (<dirName>/lib/modules/<kver>) and, when asked, its firmware directory
// into dest, keeping their paths: dest/opt/lib/modules/<kver>/... Layers
// are applied in order with their whiteouts. Nothing is executed and no
// shell or cp is needed in the image, so FROM scratch images work.
//
// The result is built in a temporary directory beside dest and renamed
// into place: dest either keeps its previous content or gets the new one
// whole. An entry that would escape the extraction, a device node or an
// oversized file fails the extraction with an error naming the entry.
// For an image index, the manifest for req.Platform (or this machine's
// platform) is used.
func (c *Client) Extract(ctx context.Context, req Request, dest string, opts ExtractOptions) (*ExtractResult, error) {
	if (opts.KernelVersion == "" && len(opts.Dirs) == 0) || strings.ContainsAny(opts.KernelVersion, "/") || opts.KernelVersion == ".." {
		return nil, fmt.Errorf("extract %s: invalid kernel version %q", req.Image, opts.KernelVersion)
	}
	img, digest, err := c.image(ctx, req)
	if err != nil {
		return nil, err
	}
	scope, err := newExtractScope(opts)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", req.Image, err)
	}
	parent := filepath.Dir(filepath.Clean(dest))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dest)+".extract-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	x := &extractor{root: tmp, scope: scope, opts: opts, res: &ExtractResult{Digest: digest}}
	layers, err := img.Layers()
	if err != nil {
		return nil, classify(req.Image, err, req.Auth)
	}
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := x.applyLayer(l); err != nil {
			var e *Error
			if errors.As(err, &e) || errors.Is(err, ErrUnsafeEntry) {
				return nil, fmt.Errorf("extract %s: layer %d: %w", req.Image, i, err)
			}
			return nil, fmt.Errorf("extract %s: layer %d: %w", req.Image, i, classify(req.Image, err, req.Auth))
		}
	}
	x.res.Files, x.res.Bytes = 0, 0
	err = filepath.WalkDir(tmp, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			info, ierr := d.Info()
			if ierr == nil {
				x.res.Files++
				x.res.Bytes += info.Size()
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := replaceDir(tmp, dest); err != nil {
		return nil, err
	}
	return x.res, nil
}

// image resolves req to one image, choosing from an index by platform.
// Pull returns the image req names (for an index, the manifest for
// req.Platform or this machine's platform) and its manifest digest. Layers
// are fetched lazily, as they are read.
func (c *Client) Pull(ctx context.Context, req Request) (v1.Image, string, error) {
	return c.image(ctx, req)
}

func (c *Client) image(ctx context.Context, req Request) (v1.Image, string, error) {
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

// extractScope is the set of image paths to extract.
type extractScope struct {
	prefixes []string // cleaned absolute image paths
}

func newExtractScope(opts ExtractOptions) (*extractScope, error) {
	dir := opts.DirName
	if dir == "" {
		dir = "/opt"
	}
	s := &extractScope{}
	if opts.KernelVersion != "" || len(opts.Dirs) == 0 {
		s.prefixes = append(s.prefixes, path.Join("/", dir, "lib", "modules", opts.KernelVersion))
	}
	if opts.FirmwarePath != "" {
		fw := path.Clean("/" + opts.FirmwarePath)
		if fw == "/" {
			return nil, fmt.Errorf("firmware path %q would extract the whole image", opts.FirmwarePath)
		}
		s.prefixes = append(s.prefixes, fw)
	}
	for _, d := range opts.Dirs {
		c := path.Clean("/" + d)
		if c == "/" {
			return nil, fmt.Errorf("directory %q would extract the whole image", d)
		}
		s.prefixes = append(s.prefixes, c)
	}
	return s, nil
}

// contains reports whether image path p is extracted.
func (s *extractScope) contains(p string) bool {
	for _, pre := range s.prefixes {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// touches reports whether removing image path p affects extracted paths:
// p is extracted, or is an ancestor of an extracted prefix.
func (s *extractScope) touches(p string) bool {
	for _, pre := range s.prefixes {
		if p == pre || strings.HasPrefix(p, pre+"/") || strings.HasPrefix(pre, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// extractor applies layers to a directory.
type extractor struct {
	root  string
	scope *extractScope
	opts  ExtractOptions
	res   *ExtractResult
}

// local maps an image path to the extraction directory.
func (x *extractor) local(p string) string { return filepath.Join(x.root, filepath.FromSlash(p)) }

// applyLayer applies one layer's entries and whiteouts.
func (x *extractor) applyLayer(l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	maxEntry, maxTotal := x.opts.MaxEntrySize, x.opts.MaxTotalSize
	if maxEntry <= 0 {
		maxEntry = 1 << 30
	}
	if maxTotal <= 0 {
		maxTotal = 4 << 30
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		for _, elem := range strings.Split(hdr.Name, "/") {
			if elem == ".." {
				return fmt.Errorf("%w: %q: path traversal", ErrUnsafeEntry, hdr.Name)
			}
		}
		p := path.Clean("/" + hdr.Name)
		dir, base := path.Split(p)
		if strings.HasPrefix(base, ".wh.") {
			if err := x.whiteout(path.Clean(dir), strings.TrimPrefix(base, ".wh.")); err != nil {
				return err
			}
			continue
		}
		if !x.scope.contains(p) {
			continue
		}
		target := x.local(p)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if st, err := os.Lstat(target); err == nil && !st.IsDir() {
				os.Remove(target)
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if hdr.Size > maxEntry {
				return fmt.Errorf("%w: %q: %d bytes, more than the %d-byte limit", ErrUnsafeEntry, hdr.Name, hdr.Size, maxEntry)
			}
			if x.res.Bytes+hdr.Size > maxTotal {
				return fmt.Errorf("%w: %q: the image holds more than the %d-byte limit", ErrUnsafeEntry, hdr.Name, maxTotal)
			}
			if err := writeEntry(target, tr, hdr); err != nil {
				return err
			}
			x.res.Files++
			x.res.Bytes += hdr.Size
		case tar.TypeSymlink:
			if path.IsAbs(hdr.Linkname) {
				return fmt.Errorf("%w: %q: symlink to the absolute path %q", ErrUnsafeEntry, hdr.Name, hdr.Linkname)
			}
			if !x.scope.contains(path.Join(path.Dir(p), hdr.Linkname)) {
				return fmt.Errorf("%w: %q: symlink to %q leaves the extracted directories", ErrUnsafeEntry, hdr.Name, hdr.Linkname)
			}
			os.RemoveAll(target)
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			src := path.Clean("/" + hdr.Linkname)
			if strings.Contains(hdr.Linkname, "..") || !x.scope.contains(src) {
				return fmt.Errorf("%w: %q: hard link to %q leaves the extracted directories", ErrUnsafeEntry, hdr.Name, hdr.Linkname)
			}
			if st, err := os.Lstat(x.local(src)); err != nil || !st.Mode().IsRegular() {
				return fmt.Errorf("%w: %q: hard link to %q, which is not an extracted file", ErrUnsafeEntry, hdr.Name, hdr.Linkname)
			}
			os.RemoveAll(target)
			if err := os.Link(x.local(src), target); err != nil {
				return err
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return fmt.Errorf("%w: %q: device nodes and FIFOs are not allowed", ErrUnsafeEntry, hdr.Name)
		default:
			// Extended headers and the like carry no file.
		}
	}
}

// whiteout applies a ".wh." entry found in image directory dir.
func (x *extractor) whiteout(dir, name string) error {
	if name == ".wh..opq" {
		if !x.scope.touches(dir) {
			return nil
		}
		entries, err := os.ReadDir(x.local(dir))
		if err != nil {
			return nil
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(x.local(dir), e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	if name == "" || name == "." || strings.Contains(name, "/") {
		return fmt.Errorf("%w: whiteout %q in %q", ErrUnsafeEntry, ".wh."+name, dir)
	}
	p := path.Join(dir, name)
	if !x.scope.touches(p) {
		return nil
	}
	return os.RemoveAll(x.local(p))
}

// writeEntry writes a regular file, replacing whatever was there (a link
// is replaced, never followed).
func writeEntry(target string, r io.Reader, hdr *tar.Header) error {
	os.RemoveAll(target)
	mode := os.FileMode(hdr.Mode).Perm() &^ 0o022
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o400)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, hdr.Size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("%q: %d of %d bytes", hdr.Name, n, hdr.Size)
	}
	return err
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
