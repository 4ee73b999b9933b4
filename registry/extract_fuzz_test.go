package registry

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kmmkit/kmmkit/internal/imagetest"
)

// fuzzLayerSep splits fuzz input into layers.
var fuzzLayerSep = []byte("\x00LAYER\x00")

// FuzzApplyLayer feeds arbitrary layers (the input split at fuzzLayerSep,
// each part a tar stream) to the extractor, into a staging directory with
// a sibling host tree. It must never panic, never change anything outside
// the staging directory (the whole tree around it is compared before and
// after), and never leave a symbolic link there that the kernel would
// follow out of it (checked by an independent resolver). The seeds are
// the attacks of TestExtractContainment: chained links (made at once or
// deferred), a clamped ".." run, and files, directories, links, hard links
// and whiteouts through them, in one layer or split.
func FuzzApplyLayer(f *testing.F) {
	mods := hostileMods
	tarOf := imagetest.Tar
	join := func(layers ...[]byte) []byte { return bytes.Join(layers, fuzzLayerSep) }
	chain, link := imagetest.ChainedEscape(mods, 2, "host", false)
	late, lateLink := imagetest.ChainedEscape(mods, 2, "host", true)
	clampedEntry, clamped := imagetest.ClampedEscape("/s")
	f.Add(tarOf(file(mods+"/a.ko", "A"), symlink(mods+"/l", "a.ko"), hardlink(mods+"/h", mods+"/a.ko")))
	f.Add(tarOf(file(mods+"/../../x", "x"), symlink(mods+"/s", "../../../../../tmp")))
	f.Add(tarOf(file("fw/.wh..wh..opq", ""), file("opt/lib/.wh.modules", ""), dir(mods+"/d/")))
	for _, c := range []struct {
		links   []imagetest.Entry
		through string
	}{{chain, link}, {late, lateLink}, {[]imagetest.Entry{clampedEntry}, clamped}} {
		through := c.through
		attack := []imagetest.Entry{
			file(through+"/pwned", "pwned"), file(through+"/victim", "pwned"), dir(through + "/newdir/"),
			symlink(through+"/newlink", "victim"), imagetest.Whiteout(through, "victim"), imagetest.Opaque(through + "/sub"),
			hardlink(mods+"/stolen.ko", through+"/secret"), hardlink("s/stolen", through+"/secret"),
		}
		f.Add(tarOf(append(c.links, attack...)...))
		f.Add(join(tarOf(c.links...), tarOf(attack...)))
		for _, a := range attack {
			f.Add(join(tarOf(c.links...), tarOf(a)))
		}
	}
	f.Add(join(tarOf(late[:len(late)-1]...), tarOf(late[len(late)-1])))
	scope, err := newExtractScope(ExtractOptions{KernelVersion: hostileKernel, FirmwarePath: "fw", Dirs: []string{"/s"}})
	if err != nil {
		f.Fatal(err)
	}
	lim := limits{entrySize: 1 << 16, totalSize: 1 << 18, entries: 2000, depth: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		imagetest.Host(t, base)
		root := filepath.Join(base, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		before := imagetest.Snapshot(t, base, "root")
		var layers []v1.Layer
		for i, part := range bytes.Split(data, fuzzLayerSep) {
			if i == 3 {
				break
			}
			layers = append(layers, imagetest.PlainLayer(part))
		}
		_, err := extractTo(context.Background(), root, scope, lim, layers)
		if after := imagetest.Snapshot(t, base, "root"); !slices.Equal(after, before) {
			t.Fatalf("the extraction changed the tree around it (err %v):\nbefore %q\nafter  %q", err, before, after)
		}
		if err == nil {
			if out := imagetest.Escapes(t, root); len(out) > 0 {
				t.Fatalf("links lead outside the extraction: %q", out)
			}
		}
	})
}
