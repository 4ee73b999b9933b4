package registry

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// FuzzApplyLayer feeds arbitrary layer bytes to the extractor: it must
// never panic, and never leave anything outside the extracted prefixes.
func FuzzApplyLayer(f *testing.F) {
	seed := func(entries ...entry) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link, Size: int64(len(e.body))}
			if e.typ != tar.TypeReg {
				h.Size = 0
			}
			_ = tw.WriteHeader(h)
			if e.typ == tar.TypeReg {
				_, _ = io.WriteString(tw, e.body)
			}
		}
		_ = tw.Close()
		return buf.Bytes()
	}
	mods := "opt/lib/modules/6.1.0-1/"
	f.Add(seed(file(mods+"a.ko", "A"), symlink(mods+"l", "a.ko"), hardlink(mods+"h", mods+"a.ko")))
	f.Add(seed(file(mods+"../../x", "x"), symlink(mods+"s", "../../../../../tmp")))
	f.Add(seed(file("fw/.wh..wh..opq", ""), file("opt/lib/.wh.modules", ""), dir(mods+"d/")))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		canary := filepath.Join(base, "canary")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(canary, 0o755); err != nil {
			t.Fatal(err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			return
		}
		scope, _ := newExtractScope(ExtractOptions{KernelVersion: "6.1.0-1", FirmwarePath: "fw"})
		x := &extractor{root: root, scope: scope, opts: ExtractOptions{MaxEntrySize: 1 << 16, MaxTotalSize: 1 << 18}, res: &ExtractResult{}}
		_ = x.applyLayer(l)
		entries, _ := os.ReadDir(canary)
		if len(entries) != 0 {
			t.Fatalf("wrote outside the extraction root: %v", entries)
		}
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err != nil || p == root {
				return nil
			}
			rel := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
			if !scope.contains(rel) && !scope.touches(rel) {
				t.Fatalf("%s is outside the extracted prefixes", rel)
			}
			return nil
		})
	})
}
