package registry

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kmmkit/kmmkit/internal/safefs"
)

// The defaults of ExtractOptions' limits.
const (
	defaultMaxEntrySize = 1 << 30
	defaultMaxTotalSize = 4 << 30
	defaultMaxEntries   = 100_000
	defaultMaxPathDepth = 64
	// maxLinkTarget is the longest symbolic link target Linux stores.
	maxLinkTarget = 4095
)

// limits are ExtractOptions' limits with the defaults applied.
type limits struct {
	entrySize, totalSize int64
	entries, depth       int
}

func (o ExtractOptions) limits() limits {
	l := limits{entrySize: o.MaxEntrySize, totalSize: o.MaxTotalSize, entries: o.MaxEntries, depth: o.MaxPathDepth}
	if l.entrySize <= 0 {
		l.entrySize = defaultMaxEntrySize
	}
	if l.totalSize <= 0 {
		l.totalSize = defaultMaxTotalSize
	}
	if l.entries <= 0 {
		l.entries = defaultMaxEntries
	}
	if l.depth <= 0 {
		l.depth = defaultMaxPathDepth
	}
	return l
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

// extractor applies layers to a staging tree. Every file system operation
// goes through the tree, so nothing is created, linked, written or removed
// outside it whatever links earlier entries made; what the links finally
// point at is checked once all layers are applied (safefs.CheckLinks).
type extractor struct {
	tree  *safefs.Tree
	scope *extractScope
	lim   limits

	entries int   // entries created or removed, with the directories made for them
	bytes   int64 // regular file bytes written
	// dirs are directories known to exist; a cache dropped whenever
	// anything is removed.
	dirs map[string]bool
	// layer holds the paths this layer created and their parents, which
	// its own whiteouts leave alone (they apply to lower layers).
	layer map[string]bool
	// skipped are the absolute symbolic links left out.
	skipped []string
}

func newExtractor(tree *safefs.Tree, scope *extractScope, lim limits) *extractor {
	return &extractor{tree: tree, scope: scope, lim: lim, dirs: map[string]bool{"/": true}}
}

// extractLayers applies layers in order, reading and verifying each one
// whole, then checks the links of the result. Errors that do not carry an
// extraction reason come from fetching a blob.
func (x *extractor) extractLayers(ctx context.Context, layers []v1.Layer) error {
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := x.apply(l); err != nil {
			return errLayer(i, l, err)
		}
	}
	err := x.tree.CheckLinks()
	var pe *fs.PathError
	if err == nil || !errors.As(err, &pe) {
		return localFailure(err)
	}
	target, _ := x.tree.Readlink(pe.Path)
	switch {
	case errors.Is(err, safefs.ErrEscapes):
		return unsafeEntry("/"+pe.Path, "symbolic link to %q leads outside the extraction directory once all layers are applied", target)
	case errors.Is(err, syscall.ELOOP):
		return unsafeEntry("/"+pe.Path, "symbolic link to %q goes through too many links", target)
	}
	return localFailure(err)
}

// streamError is a failure to read the layer's tar stream (as opposed to
// writing what it holds): the layer's digests decide what it means.
type streamError struct{ err error }

func (e *streamError) Error() string { return e.err.Error() }

// apply reads one layer to its end, applying its entries and whiteouts.
// A refused entry or a local failure stops at once; otherwise the layer
// must match its digest and diff ID.
func (x *extractor) apply(l v1.Layer) error {
	s, err := openLayer(l)
	if err != nil {
		return err
	}
	defer s.close()
	r, err := s.decompress()
	if err != nil {
		return s.finish(err)
	}
	x.layer = map[string]bool{}
	err = x.entriesOf(tar.NewReader(r))
	var se *streamError
	if errors.As(err, &se) {
		return s.finish(se.err)
	}
	if err != nil {
		return err
	}
	return s.finish(nil)
}

// entriesOf applies the entries of a tar stream.
func (x *extractor) entriesOf(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &streamError{err}
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader || hdr.Typeflag == tar.TypeXHeader {
			continue
		}
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}
}

// entry applies one tar entry.
func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	if err := x.checkName(hdr.Name, hdr.Name); err != nil {
		return err
	}
	p := path.Clean("/" + hdr.Name)
	dir, base := path.Split(p)
	if strings.HasPrefix(base, ".wh.") {
		return x.whiteout(hdr.Name, path.Clean(dir), strings.TrimPrefix(base, ".wh."))
	}
	if !x.scope.contains(p) {
		return nil
	}
	if err := x.count(hdr.Name); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := x.tree.Lstat(p); err == nil && !fi.IsDir() {
			if err := x.remove(hdr.Name, p); err != nil {
				return err
			}
		}
		if err := x.mkdirAll(hdr.Name, p); err != nil {
			return err
		}
	case tar.TypeReg:
		if err := x.file(tr, hdr, p); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := x.symlink(hdr, p); err != nil {
			return err
		}
	case tar.TypeLink:
		if err := x.hardlink(hdr, p); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return unsafeEntry(hdr.Name, "device nodes and FIFOs are not allowed")
	default:
		return unsafeEntry(hdr.Name, "entries of tar type %q are not supported", hdr.Typeflag)
	}
	x.written(p)
	return nil
}

// checkName refuses a name (an entry's, or a link's target) with a ".."
// element or deeper than the depth limit.
func (x *extractor) checkName(entry, name string) error {
	elems := strings.Split(name, "/")
	depth := 0
	for _, e := range elems {
		switch e {
		case "..":
			return unsafeEntry(entry, "path traversal in %q", name)
		case "", ".":
		default:
			depth++
		}
	}
	if depth > x.lim.depth {
		return unsafeEntry(entry, "%q is %d levels deep, more than the %d-level limit (ExtractOptions.MaxPathDepth)", name, depth, x.lim.depth)
	}
	return nil
}

// count counts one entry against the entry limit.
func (x *extractor) count(entry string) error {
	x.entries++
	if x.entries > x.lim.entries {
		return unsafeEntry(entry, "the image holds more than the %d-entry limit (ExtractOptions.MaxEntries)", x.lim.entries)
	}
	return nil
}

// mkdirAll creates directory p and its parents, counting each one made.
func (x *extractor) mkdirAll(entry, p string) error {
	if x.dirs[p] {
		return nil
	}
	var missing []string
	for d := p; !x.dirs[d]; d = path.Dir(d) {
		fi, err := x.tree.Lstat(d)
		if err == nil && fi.IsDir() {
			x.dirs[d] = true
			break
		}
		missing = append(missing, d)
	}
	for range missing {
		if err := x.count(entry); err != nil {
			return err
		}
	}
	if err := x.tree.MkdirAll(p, 0o755); err != nil {
		return entryFailure(entry, err)
	}
	for _, d := range missing {
		x.dirs[d] = true
	}
	return nil
}

// remove removes p and what is below it.
func (x *extractor) remove(entry, p string) error {
	x.forgetDirs()
	if err := x.tree.RemoveAll(p); err != nil {
		return entryFailure(entry, err)
	}
	return nil
}

// replacing drops the directory cache if p, about to be replaced by a
// file or link, was a directory.
func (x *extractor) replacing(p string) {
	if x.dirs[p] {
		x.forgetDirs()
	}
}

func (x *extractor) forgetDirs() {
	clear(x.dirs)
	x.dirs["/"] = true
}

// written records that this layer created p (and so its parents).
func (x *extractor) written(p string) {
	for ; !x.layer[p]; p = path.Dir(p) {
		x.layer[p] = true
		if p == "/" {
			return
		}
	}
}

// file writes a regular file, replacing whatever was there (a link is
// replaced, never followed).
func (x *extractor) file(tr *tar.Reader, hdr *tar.Header, p string) error {
	if hdr.Size > x.lim.entrySize {
		return unsafeEntry(hdr.Name, "%d bytes, more than the %d-byte limit (ExtractOptions.MaxEntrySize)", hdr.Size, x.lim.entrySize)
	}
	if x.bytes+hdr.Size > x.lim.totalSize {
		return unsafeEntry(hdr.Name, "the image holds more than the %d-byte limit (ExtractOptions.MaxTotalSize)", x.lim.totalSize)
	}
	if err := x.mkdirAll(hdr.Name, path.Dir(p)); err != nil {
		return err
	}
	mode := fs.FileMode(hdr.Mode).Perm()&^0o022 | 0o400
	x.replacing(p)
	f, err := x.tree.Create(p, mode)
	if err != nil {
		return entryFailure(hdr.Name, err)
	}
	src := &errReader{r: io.LimitReader(tr, hdr.Size)}
	n, err := io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case src.err != nil:
		return &streamError{src.err}
	case err != nil:
		return localFailure(fmt.Errorf("writing %q: %w", hdr.Name, err))
	case n != hdr.Size:
		return &streamError{fmt.Errorf("%q: %d of %d bytes: %w", hdr.Name, n, hdr.Size, io.ErrUnexpectedEOF)}
	}
	x.bytes += hdr.Size
	return nil
}

// symlink creates a relative symbolic link that stays among the extracted
// directories.
func (x *extractor) symlink(hdr *tar.Header, p string) error {
	to := hdr.Linkname
	switch {
	case path.IsAbs(to):
		// It can only point into the host (a copied tree's build link,
		// say): leave it out, removing what lower layers had there.
		x.skipped = append(x.skipped, hdr.Name)
		return x.remove(hdr.Name, p)
	case to == "" || len(to) > maxLinkTarget:
		return unsafeEntry(hdr.Name, "symlink target of %d bytes", len(to))
	case !x.scope.contains(path.Join(path.Dir(p), to)):
		return unsafeEntry(hdr.Name, "symlink to %q leaves the extracted directories", to)
	}
	if err := x.checkDepth(hdr.Name, to); err != nil {
		return err
	}
	if err := x.mkdirAll(hdr.Name, path.Dir(p)); err != nil {
		return err
	}
	x.replacing(p)
	if err := x.tree.Symlink(to, p); err != nil {
		if errors.Is(err, safefs.ErrEscapes) {
			return unsafeEntry(hdr.Name, "symlink to %q leads outside the extraction directory", to)
		}
		return entryFailure(hdr.Name, err)
	}
	return nil
}

// checkDepth bounds a link target's depth (".." elements allowed: the
// tree decides where they lead).
func (x *extractor) checkDepth(entry, to string) error {
	if n := strings.Count(to, "/") + 1; n > 2*x.lim.depth {
		return unsafeEntry(entry, "link target %q has %d elements, more than twice the %d-level limit (ExtractOptions.MaxPathDepth)", to, n, x.lim.depth)
	}
	return nil
}

// hardlink links p to an extracted regular file.
func (x *extractor) hardlink(hdr *tar.Header, p string) error {
	if err := x.checkName(hdr.Name, hdr.Linkname); err != nil {
		return err
	}
	src := path.Clean("/" + hdr.Linkname)
	if !x.scope.contains(src) {
		return unsafeEntry(hdr.Name, "hard link to %q leaves the extracted directories", hdr.Linkname)
	}
	if err := x.mkdirAll(hdr.Name, path.Dir(p)); err != nil {
		return err
	}
	x.replacing(p)
	if err := x.tree.Link(src, p); err != nil {
		if errors.Is(err, safefs.ErrEscapes) {
			return unsafeEntry(hdr.Name, "hard link to %q leads outside the extraction directory", hdr.Linkname)
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, safefs.ErrNotRegular) {
			return unsafeEntry(hdr.Name, "hard link to %q, which is not an extracted file", hdr.Linkname)
		}
		return entryFailure(hdr.Name, err)
	}
	return nil
}

// whiteout applies a ".wh." entry found in image directory dir: it
// removes dir/name from the lower layers, or for ".wh..wh..opq" all of
// dir's lower-layer content.
func (x *extractor) whiteout(entry, dir, name string) error {
	if name == ".wh..opq" {
		if !x.scope.touches(dir) {
			return nil
		}
		if err := x.count(entry); err != nil {
			return err
		}
		return x.opaque(entry, dir)
	}
	if name == "" || name == "." || name == ".." {
		return unsafeEntry(entry, "whiteout of %q in %q", name, dir)
	}
	p := path.Join(dir, name)
	if !x.scope.touches(p) || x.layer[p] {
		return nil
	}
	if err := x.count(entry); err != nil {
		return err
	}
	return x.remove(entry, p)
}

// opaque removes what lower layers put in dir, keeping what this layer
// wrote there.
func (x *extractor) opaque(entry, dir string) error {
	children, err := x.tree.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return entryFailure(entry, err)
	}
	for _, c := range children {
		p := path.Join(dir, c.Name())
		switch {
		case !x.layer[p]:
			if err := x.remove(entry, p); err != nil {
				return err
			}
		case c.IsDir():
			if err := x.opaque(entry, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// errReader keeps the error of its reader, to tell a failed read of the
// layer from a failed write of the file.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}
