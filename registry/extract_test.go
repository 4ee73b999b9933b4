package registry

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/imagetest"
	"github.com/kmmkit/kmmkit/reason"
)

// Short names for the entries of test layers.
var (
	file     = imagetest.File
	dir      = imagetest.Dir
	symlink  = imagetest.Symlink
	hardlink = imagetest.Hardlink
	device   = imagetest.Device
	layer    = imagetest.Layer
	imageOf  = imagetest.Image
)

// tree lists the files under dir as "path" or "path -> link" or
// "path: body".
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			to, _ := os.Readlink(p)
			out = append(out, rel+" -> "+to)
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			out = append(out, rel+": "+string(b))
		}
		return nil
	}))
	sort.Strings(out)
	return out
}

func pushTo(t *testing.T, c *Client, reg *testRegistry, tag string, img v1.Image) Request {
	t.Helper()
	req := Request{Image: reg.host + "/kmm/" + tag}
	d, err := c.Push(context.Background(), req, img)
	require.NoError(t, err)
	want, _ := img.Digest()
	require.Equal(t, want.String(), d)
	return req
}

func TestExtractScopeAndWhiteouts(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	c := newChecker(t, WithCABundle(reg.caPEM()))
	const kver = "6.1.0-56-amd64"
	mods := "opt/lib/modules/" + kver
	img := imageOf(t,
		layer(t,
			dir("opt/"), dir(mods+"/"),
			file(mods+"/extra/a.ko", "A"), file(mods+"/extra/gone.ko", "G"), file(mods+"/modules.dep", "extra/a.ko:\n"),
			file("opt/lib/modules/5.14.0/extra/a.ko", "other kernel"),
			file("etc/passwd", "root:x:0:0"), file("bin/sh", "#!"),
			file("firmware/acme/fw.bin", "FW"), file("firmware/acme/old.bin", "OLD"),
			file("./"+mods+"/extra/dot.ko", "D"),
		),
		layer(t,
			file(mods+"/extra/.wh.gone.ko", ""),
			file("firmware/acme/.wh..wh..opq", ""), file("firmware/acme/new.bin", "NEW"),
			file(mods+"/extra/b.ko", "B"),
			symlink(mods+"/extra/alias.ko", "a.ko"),
			hardlink(mods+"/extra/a-link.ko", "/"+mods+"/extra/a.ko"),
			file("etc/.wh.passwd", ""),
		),
	)
	req := pushTo(t, c, reg, "scratch-kmod:v1", img)
	dest := filepath.Join(t.TempDir(), "kmod")
	res, err := c.Extract(context.Background(), req, dest, ExtractOptions{KernelVersion: kver, FirmwarePath: "/firmware"})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"firmware/acme/new.bin: NEW",
		mods + "/extra/a-link.ko: A",
		mods + "/extra/a.ko: A",
		mods + "/extra/alias.ko -> a.ko",
		mods + "/extra/b.ko: B",
		mods + "/extra/dot.ko: D",
		mods + "/modules.dep: extra/a.ko:\n",
	}, listTree(t, dest))
	d, _ := img.Digest()
	assert.Equal(t, d.String(), res.Digest)
	assert.Equal(t, 6, res.Files)

	// A whiteout of an ancestor removes the whole module tree.
	wiped := imageOf(t, layer(t, file(mods+"/extra/a.ko", "A")), layer(t, file("opt/lib/.wh.modules", "")))
	req = pushTo(t, c, reg, "wiped:v1", wiped)
	dest2 := filepath.Join(t.TempDir(), "kmod")
	_, err = c.Extract(context.Background(), req, dest2, ExtractOptions{KernelVersion: kver})
	require.NoError(t, err)
	assert.Empty(t, listTree(t, dest2))
}

func TestExtractRejectsUnsafeEntries(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	c := newChecker(t, WithCABundle(reg.caPEM()))
	const kver = "6.1.0-1"
	mods := "opt/lib/modules/" + kver
	cases := map[string]struct {
		entries []imagetest.Entry
		opts    ExtractOptions
		want    string
	}{
		"traversal":          {entries: []imagetest.Entry{file(mods+"/../../../../etc/shadow", "x")}, want: "path traversal"},
		"escaping symlink":   {entries: []imagetest.Entry{symlink(mods+"/evil", "../../../../etc")}, want: "leaves the extracted directories"},
		"escaping hard link": {entries: []imagetest.Entry{file("etc/shadow", "s"), hardlink(mods+"/evil.ko", "etc/shadow")}, want: "hard link"},
		"device node":        {entries: []imagetest.Entry{device(mods + "/null")}, want: "device nodes"},
		"oversized":          {entries: []imagetest.Entry{file(mods+"/big.ko", strings.Repeat("x", 100))}, opts: ExtractOptions{MaxEntrySize: 10}, want: "100 bytes, more than the 10-byte limit"},
		"too much in total":  {entries: []imagetest.Entry{file(mods+"/a.ko", "12345"), file(mods+"/b.ko", "12345")}, opts: ExtractOptions{MaxTotalSize: 8}, want: "more than the 8-byte limit"},
		"bad whiteout":       {entries: []imagetest.Entry{file(mods+"/.wh..", "")}, want: "whiteout"},
		"link loop":          {entries: []imagetest.Entry{symlink(mods+"/a", "b"), symlink(mods+"/b", "a")}, want: "too many levels of symbolic links"},
		"parent whiteout":    {entries: []imagetest.Entry{file(mods+"/.wh...", "")}, want: `whiteout of ".."`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req := pushTo(t, c, reg, strings.ReplaceAll(name, " ", "-")+":v1", imageOf(t, layer(t, tc.entries...)))
			dest := filepath.Join(t.TempDir(), "kmod")
			require.NoError(t, os.MkdirAll(dest, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dest, "previous"), []byte("kept"), 0o644))
			tc.opts.KernelVersion = kver
			_, err := c.Extract(context.Background(), req, dest, tc.opts)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrUnsafeEntry), "%v", err)
			assert.Equal(t, reason.UnsafeImage, reason.Of(err))
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, []string{"previous: kept"}, listTree(t, dest), "a failed extraction leaves dest as it was")
			entries, _ := os.ReadDir(filepath.Dir(dest))
			assert.Len(t, entries, 1, "no temporary directory left behind")
		})
	}
}

// TestExtractSkipsAbsoluteSymlinks: an absolute link (the build and source
// links of a copied /lib/modules tree, or an attempt at /etc/shadow) is
// left out and named in the result; writing through its path later stays
// inside the extraction.
func TestExtractSkipsAbsoluteSymlinks(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	c := newChecker(t, WithCABundle(reg.caPEM()))
	const kver = "6.1.0-1"
	mods := "opt/lib/modules/" + kver
	outside := t.TempDir()
	img := imageOf(t,
		layer(t, file(mods+"/build", "a file a later layer replaces by a link")),
		layer(t, symlink(mods+"/build", "/usr/src/linux-headers-"+kver), symlink(mods+"/evil.ko", "/etc/shadow"),
			symlink(mods+"/out", outside), file(mods+"/nic.ko", "module")),
		layer(t, file(mods+"/out/pwned", "x")))
	req := pushTo(t, c, reg, "abs-links:v1", img)
	dest := filepath.Join(t.TempDir(), "kmod")
	res, err := c.Extract(context.Background(), req, dest, ExtractOptions{KernelVersion: kver})
	require.NoError(t, err)
	assert.Equal(t, []string{mods + "/build", mods + "/evil.ko", mods + "/out"}, res.Skipped)
	assert.Equal(t, []string{"opt/lib/modules/6.1.0-1/nic.ko: module", "opt/lib/modules/6.1.0-1/out/pwned: x"}, listTree(t, dest))
	entries, err := os.ReadDir(outside)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing is written through an absolute link")
}

func TestExtractIndexAndMissing(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	c := newChecker(t, WithCABundle(reg.caPEM()))
	mods := "opt/lib/modules/6.1.0-1"
	amd := imageOf(t, layer(t, file(mods+"/arch", "amd64")))
	arm := imageOf(t, layer(t, file(mods+"/arch", "arm64")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	ref, err := ParseReference(reg.host+"/kmm/multi:v1", v1beta1TLS())
	require.NoError(t, err)
	require.NoError(t, writeIndex(ref, idx, reg))

	dest := filepath.Join(t.TempDir(), "kmod")
	_, err = c.Extract(context.Background(), Request{Image: reg.host + "/kmm/multi:v1", Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}, dest, ExtractOptions{KernelVersion: "6.1.0-1"})
	require.NoError(t, err)
	assert.Equal(t, []string{mods + "/arch: arm64"}, listTree(t, dest))

	_, err = c.Extract(context.Background(), Request{Image: reg.host + "/kmm/multi:v1", Platform: &v1.Platform{OS: "linux", Architecture: "riscv64"}}, dest, ExtractOptions{KernelVersion: "6.1.0-1"})
	assert.Equal(t, ReasonNotFound, ReasonOf(err))
	_, err = c.Extract(context.Background(), Request{Image: reg.host + "/kmm/none:v1"}, dest, ExtractOptions{KernelVersion: "6.1.0-1"})
	assert.Equal(t, ReasonNotFound, ReasonOf(err))
	_, err = c.Extract(context.Background(), Request{Image: reg.host + "/kmm/multi:v1"}, dest, ExtractOptions{KernelVersion: "../x"})
	assert.ErrorContains(t, err, "invalid kernel version")
	assert.Equal(t, []string{mods + "/arch: arm64"}, listTree(t, dest), "failed runs keep the last good extraction")
}

// rawManifest pushes manifest bytes as they are.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// TestPullRefusesAHugeConfig: a manifest that declares a config blob of a
// terabyte is refused before the config is read.
func TestPullRefusesAHugeConfig(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	c := newChecker(t, WithCABundle(reg.caPEM()))
	req := pushTo(t, c, reg, "honest:v1", imageOf(t, layer(t, file("opt/lib/modules/6.1.0-1/a.ko", "a"))))
	img, _, err := c.Pull(context.Background(), req)
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	m.Config.Size = 1 << 40
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	ref, err := name.ParseReference(reg.host + "/kmm/huge-config:v1")
	require.NoError(t, err)
	require.NoError(t, remote.Put(ref, rawManifest{raw, m.MediaType}, reg.pushOpts()...))

	_, _, err = c.Pull(context.Background(), Request{Image: ref.String()})
	require.Error(t, err)
	assert.Equal(t, reason.UnsafeImage, reason.Of(err))
	assert.Contains(t, err.Error(), "1099511627776 bytes, more than the 4194304-byte limit")
	_, err = c.Extract(context.Background(), Request{Image: ref.String()}, filepath.Join(t.TempDir(), "x"), ExtractOptions{KernelVersion: "6.1.0-1"})
	assert.Equal(t, reason.UnsafeImage, reason.Of(err), "%v", err)
}
