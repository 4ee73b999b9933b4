// Package imagetest crafts hostile container images for tests: layers
// built entry by entry with archive/tar (links through links, whiteouts,
// anything a real tar can hold), an in-process registry
// (go-containerregistry's pkg/registry) that can tamper with the blobs it
// serves, and snapshots of directory trees to prove that nothing outside
// an extraction changed.
package imagetest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one tar entry of a layer.
type Entry struct {
	Name, Body, Link string
	Type             byte
	Mode             int64 // 0: 0o644 for files and links, 0o755 for directories
}

// File is a regular file entry.
func File(name, body string) Entry { return Entry{Name: name, Body: body, Type: tar.TypeReg} }

// Dir is a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink is a symbolic link entry name -> to.
func Symlink(name, to string) Entry { return Entry{Name: name, Link: to, Type: tar.TypeSymlink} }

// Hardlink is a hard link entry name to the image path to.
func Hardlink(name, to string) Entry { return Entry{Name: name, Link: to, Type: tar.TypeLink} }

// Device is a character device entry.
func Device(name string) Entry { return Entry{Name: name, Type: tar.TypeChar} }

// Whiteout is the whiteout of dir/name.
func Whiteout(dir, name string) Entry { return File(strings.TrimSuffix(dir, "/")+"/.wh."+name, "") }

// Opaque is the opaque whiteout of dir.
func Opaque(dir string) Entry { return File(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", "") }

// Tar returns a tar stream of entries.
func Tar(entries ...Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Link}
		if h.Mode == 0 {
			h.Mode = 0o644
			if e.Type == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if e.Type == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(fmt.Sprintf("imagetest: %s: %v", e.Name, err))
		}
		io.WriteString(tw, e.Body)
	}
	tw.Close()
	return buf.Bytes()
}

// Layer is a gzip-compressed layer of entries.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return layerOf(t, Tar(entries...))
}

// TarLayer is a layer of a tar stream, gzip-compressed unless opts say
// otherwise (tarball.WithCompression).
func TarLayer(t testing.TB, data []byte, opts ...tarball.LayerOption) v1.Layer {
	t.Helper()
	return layerOf(t, data, opts...)
}

func layerOf(t testing.TB, data []byte, opts ...tarball.LayerOption) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// PlainLayer is an uncompressed layer of a tar stream (its blob is the
// tar itself).
func PlainLayer(data []byte) v1.Layer {
	return static.NewLayer(data, types.OCIUncompressedLayer)
}

// Image is an image of layers.
func Image(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ChainedEscape returns entries that make the image path link, below the
// extracted directory prefix (such as "opt/lib/modules/6.1.0-1"), lead
// above levels above the extraction root and then to rest: two relative
// symbolic links that each stay inside prefix when their paths are
// cleaned as strings, while the kernel follows the first before applying
// the second's "..". With deferred, the first is a directory when the
// second is made (so the second leads nowhere harmful yet) and becomes a
// link afterwards.
func ChainedEscape(prefix string, levels int, rest string, deferred bool) (entries []Entry, link string) {
	prefix = strings.Trim(prefix, "/")
	k := len(strings.Split(prefix, "/")) + levels - 1
	d := prefix
	for i := range k {
		d += fmt.Sprintf("/d%d", i)
		entries = append(entries, Dir(d+"/"))
	}
	up := Symlink(d+"/up", strings.Repeat("../", k))
	esc := Symlink(d+"/esc", "up/"+strings.Repeat("../", k+1)+rest)
	if deferred {
		entries = append(entries, Dir(d+"/up/"), esc, up)
	} else {
		entries = append(entries, up, esc)
	}
	return entries, esc.Name
}

// ClampedEscape returns the entry of a symbolic link inside the image
// directory named like the absolute host directory host, to host: a run of
// ".." longer than the path, which string cleaning clamps at "/" (so the
// target looks like the image's own host directory) while the kernel
// climbs out of the extraction to the real root.
func ClampedEscape(host string) (e Entry, link string) {
	dir := strings.Trim(host, "/")
	e = Symlink(dir+"/l", strings.Repeat("../", 64)+dir)
	return e, e.Name
}

// Registry is an in-process registry (plain HTTP) that can tamper with
// the blobs it serves.
type Registry struct {
	// Host is host:port.
	Host string

	mu     sync.Mutex
	tamper map[string]func([]byte)
}

// NewRegistry starts a registry for the test.
func NewRegistry(t testing.TB) *Registry {
	t.Helper()
	r := &Registry{tamper: map[string]func([]byte){}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		f := r.tamperFor(req)
		if f == nil {
			inner.ServeHTTP(w, req)
			return
		}
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if rec.Code == http.StatusOK {
			f(body)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *Registry) tamperFor(req *http.Request) func([]byte) {
	if req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tamper[req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]]
}

// Tamper makes the registry serve the blob d changed in place by f (the
// same length, so only a digest check can tell).
func (r *Registry) Tamper(d v1.Hash, f func(blob []byte)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tamper[d.String()] = f
}

// FlipByte is a Tamper function that changes the byte at offset off
// (counted from the end when negative).
func FlipByte(off int) func([]byte) {
	return func(b []byte) {
		if off < 0 {
			off += len(b)
		}
		b[off] ^= 0x20
	}
}

// Push pushes img as repoTag ("kmm/x:v1") and returns the tag reference
// and the digest reference.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) (tag, pinned string) {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.String(), ref.Context().Digest(d.String()).String()
}

// Snapshot describes every file under dir but those named in skip
// (slash-separated paths relative to dir): its name, mode, and content or
// link target, one line each, sorted.
func Snapshot(t testing.TB, dir string, skip ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			to, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + to
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %q", b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// Host is a directory of files an escaping extraction would change: a
// file, a 0600 secret, a directory with a file, beneath dir/host. It
// returns that directory's path.
func Host(t testing.TB, dir string) string {
	t.Helper()
	h := filepath.Join(dir, "host")
	for p, body := range map[string]string{"victim": "victim", "secret": "secret", "sub/inner": "inner"} {
		p = filepath.Join(h, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(h, "secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// Escapes lists the symbolic links under root that lead outside it when
// followed the way the kernel follows them (absolute targets from the
// real /, ".." from the real parent), with an independent resolver over
// the real file system.
func Escapes(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if leaves(root, strings.Split(filepath.ToSlash(rel), "/")) {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// leaves follows the path elems from root, expanding links, and reports
// whether any step goes above root.
func leaves(root string, elems []string) bool {
	var at []string // the resolved path below root
	hops := 0
	for len(elems) > 0 {
		e := elems[0]
		elems = elems[1:]
		switch e {
		case "", ".":
			continue
		case "..":
			if len(at) == 0 {
				return true
			}
			at = at[:len(at)-1]
			continue
		}
		p := filepath.Join(append([]string{root}, append(at, e)...)...)
		fi, err := os.Lstat(p)
		if err != nil {
			return false // the kernel's lookup stops here too
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			at = append(at, e)
			continue
		}
		if hops++; hops > 40 {
			return false // ELOOP
		}
		to, err := os.Readlink(p)
		if err != nil || filepath.IsAbs(to) {
			return true
		}
		elems = append(strings.Split(to, "/"), elems...)
	}
	return false
}
