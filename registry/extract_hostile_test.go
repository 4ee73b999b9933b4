package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/bombtest"
	"github.com/kmmkit/kmmkit/internal/imagetest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

const hostileKernel = "6.1.0-1"

var hostileMods = "opt/lib/modules/" + hostileKernel

// hostileSetup is a test directory holding the extraction's parent
// ("pull", with a previous extraction in pull/kmod) and a sibling "host"
// tree an escaping extraction would change; it returns the destination,
// the host directory and a snapshot of everything.
func hostileSetup(t *testing.T) (base, dest, host string, before []string) {
	base = t.TempDir()
	host = imagetest.Host(t, base)
	dest = filepath.Join(base, "pull", "kmod")
	require.NoError(t, os.MkdirAll(dest, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dest, "previous"), []byte("kept"), 0o644))
	return base, dest, host, imagetest.Snapshot(t, base)
}

func insecureClient(t *testing.T) *Client {
	c, err := NewClient(WithRetryPolicy(RetryPolicy{Attempts: 1}))
	require.NoError(t, err)
	return c
}

func insecure(image string) Request {
	return Request{Image: image, TLS: v1beta1.TLSOptions{Insecure: true}}
}

// attack is what an image does through a link that leads to the host
// directory.
type attack struct {
	name string
	// entries use link (the image path of the escaping link) and dir
	// (the extracted directory the link is in).
	entries func(dir, link string) []imagetest.Entry
}

var attacks = []attack{
	{"write", func(_, l string) []imagetest.Entry { return []imagetest.Entry{imagetest.File(l+"/pwned", "pwned")} }},
	{"overwrite", func(_, l string) []imagetest.Entry { return []imagetest.Entry{imagetest.File(l+"/victim", "pwned")} }},
	{"mkdir", func(_, l string) []imagetest.Entry { return []imagetest.Entry{imagetest.Dir(l + "/newdir/")} }},
	{"symlink", func(_, l string) []imagetest.Entry {
		return []imagetest.Entry{imagetest.Symlink(l+"/newlink", "victim")}
	}},
	{"whiteout", func(_, l string) []imagetest.Entry { return []imagetest.Entry{imagetest.Whiteout(l, "victim")} }},
	{"opaque whiteout", func(_, l string) []imagetest.Entry { return []imagetest.Entry{imagetest.Opaque(l + "/sub")} }},
	{"hard link", func(d, l string) []imagetest.Entry {
		return []imagetest.Entry{imagetest.Hardlink(d+"/stolen.ko", l+"/secret")}
	}},
}

// TestExtractContainment runs every attack through every kind of
// escaping link, in one layer and split across two, and checks that the
// extraction fails naming the entry, with reason UnsafeImage, and that
// nothing outside the destination changed (nor the destination itself).
func TestExtractContainment(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	c := insecureClient(t)
	ctx := context.Background()
	links := []struct {
		name string
		// make returns the link entries, the escaping link, the
		// extracted directory and the options, for the host directory.
		make func(host string) ([]imagetest.Entry, string, string, ExtractOptions)
		// named says which entry the error names: the link, or the
		// attack's entry going through it.
		namesLink bool
	}{
		{"chained", func(string) ([]imagetest.Entry, string, string, ExtractOptions) {
			e, l := imagetest.ChainedEscape(hostileMods, 2, "host", false)
			return e, l, hostileMods, ExtractOptions{KernelVersion: hostileKernel}
		}, true},
		{"chained deferred", func(string) ([]imagetest.Entry, string, string, ExtractOptions) {
			e, l := imagetest.ChainedEscape(hostileMods, 2, "host", true)
			return e, l, hostileMods, ExtractOptions{KernelVersion: hostileKernel}
		}, false},
		{"clamped", func(host string) ([]imagetest.Entry, string, string, ExtractOptions) {
			e, l := imagetest.ClampedEscape(host)
			return []imagetest.Entry{e}, l, strings.Trim(host, "/"), ExtractOptions{Dirs: []string{host}}
		}, true},
	}
	n := 0
	for _, lk := range links {
		for _, a := range attacks {
			for _, split := range []bool{false, true} {
				name := lk.name + "/" + a.name
				if split {
					name += "/split"
				}
				t.Run(name, func(t *testing.T) {
					base, dest, host, before := hostileSetup(t)
					linkEntries, link, dir, opts := lk.make(host)
					attackEntries := a.entries(dir, link)
					var img v1.Image
					if split {
						img = imagetest.Image(t, imagetest.Layer(t, linkEntries...), imagetest.Layer(t, attackEntries...))
					} else {
						img = imagetest.Image(t, imagetest.Layer(t, append(linkEntries, attackEntries...)...))
					}
					n++
					tag, _ := reg.Push(t, fmt.Sprintf("kmm/hostile%d:v1", n), img)
					_, err := c.Extract(ctx, insecure(tag), dest, opts)
					require.Error(t, err)
					assert.ErrorIs(t, err, ErrUnsafeEntry)
					assert.Equal(t, reason.UnsafeImage, reason.Of(err), "%v", err)
					named := attackEntries[0].Name
					if lk.namesLink {
						named = link
					}
					assert.Contains(t, err.Error(), fmt.Sprintf("%q", named))
					if split && !lk.namesLink {
						assert.Contains(t, err.Error(), "layer 1 (sha256:")
					}
					assert.Equal(t, before, imagetest.Snapshot(t, base), "nothing outside (or in) dest changed")
				})
			}
		}
	}
}

// TestExtractRefusesLinksEscapingAfterAllLayers: a link that stays inside
// when made and leads out once a later layer replaces a directory on its
// way is refused after the last layer, even if nothing went through it.
func TestExtractRefusesLinksEscapingAfterAllLayers(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	base, dest, _, before := hostileSetup(t)
	entries, link := imagetest.ChainedEscape(hostileMods, 2, "host", true)
	img := imagetest.Image(t,
		imagetest.Layer(t, entries[:len(entries)-1]...),
		imagetest.Layer(t, entries[len(entries)-1]))
	tag, _ := reg.Push(t, "kmm/late:v1", img)
	_, err := insecureClient(t).Extract(context.Background(), insecure(tag), dest, ExtractOptions{KernelVersion: hostileKernel})
	require.Error(t, err)
	assert.Equal(t, reason.UnsafeImage, reason.Of(err))
	assert.ErrorContains(t, err, fmt.Sprintf("%q: symbolic link to", "/"+link))
	assert.ErrorContains(t, err, "once all layers are applied")
	assert.Equal(t, before, imagetest.Snapshot(t, base))
}

// TestExtractKeepsLinksInside: links that stay inside, however they
// climb, are kept, and entries may be written through them.
func TestExtractKeepsLinksInside(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	base, dest, _, _ := hostileSetup(t)
	m := hostileMods
	img := imagetest.Image(t,
		imagetest.Layer(t,
			imagetest.Dir(m+"/kernel/drivers/"),
			imagetest.File(m+"/kernel/drivers/a.ko", "A"),
			imagetest.Symlink(m+"/extra", "kernel/drivers"),
			imagetest.Symlink(m+"/kernel/up", "../kernel/drivers/../drivers"),
		),
		imagetest.Layer(t,
			imagetest.File(m+"/extra/b.ko", "B"),
			imagetest.Hardlink(m+"/c.ko", m+"/extra/a.ko"),
		))
	tag, _ := reg.Push(t, "kmm/inside:v1", img)
	hostBefore := imagetest.Snapshot(t, base, "pull")
	res, err := insecureClient(t).Extract(context.Background(), insecure(tag), dest, ExtractOptions{KernelVersion: hostileKernel})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Files)
	assert.Equal(t, []string{
		m + "/c.ko: A",
		m + "/extra -> kernel/drivers",
		m + "/kernel/drivers/a.ko: A",
		m + "/kernel/drivers/b.ko: B",
		m + "/kernel/up -> ../kernel/drivers/../drivers",
	}, listTree(t, dest))
	assert.Empty(t, imagetest.Escapes(t, dest))
	assert.Equal(t, hostBefore, imagetest.Snapshot(t, base, "pull"))
}

// TestExtractTamperedLayers: a layer the registry serves changed (the same
// length, so only a digest check can tell) fails the extraction, names the
// layer, and leaves dest as it was and no temporary directory, whether the
// blob is a plain tar, gzip or zstd, and whether the image is pulled by
// tag or pinned by digest. The tampered module would have been extracted:
// the change is in a file's content, inside the tar.
func TestExtractTamperedLayers(t *testing.T) {
	c := insecureClient(t)
	ctx := context.Background()
	good := imagetest.Tar(imagetest.File(hostileMods+"/ok.ko", "fine"))
	evil := imagetest.Tar(imagetest.File(hostileMods+"/a.ko", strings.Repeat("A", 4096)), imagetest.File(hostileMods+"/modules.dep", "a.ko:\n"))
	layers := map[string]func(t *testing.T, data []byte) v1.Layer{
		"plain": func(_ *testing.T, data []byte) v1.Layer { return imagetest.PlainLayer(data) },
		"gzip":  func(t *testing.T, data []byte) v1.Layer { return imagetest.TarLayer(t, data) },
		"zstd": func(t *testing.T, data []byte) v1.Layer {
			return imagetest.TarLayer(t, data, tarball.WithCompression(compression.ZStd))
		},
	}
	n := 0
	for kind, mk := range layers {
		for _, pinned := range []bool{false, true} {
			for _, where := range []string{"middle", "last byte"} {
				name := kind + "/" + where
				if pinned {
					name += "/pinned"
				}
				t.Run(name, func(t *testing.T) {
					reg := imagetest.NewRegistry(t) // tampering is per blob digest
					base, dest, _, before := hostileSetup(t)
					bad := mk(t, evil)
					img := imagetest.Image(t, mk(t, good), bad)
					n++
					tag, digest := reg.Push(t, fmt.Sprintf("kmm/tampered%d:v1", n), img)
					ref := tag
					if pinned {
						ref = digest
					}
					// Untampered, it extracts.
					probe := filepath.Join(t.TempDir(), "probe")
					_, err := c.Extract(ctx, insecure(ref), probe, ExtractOptions{KernelVersion: hostileKernel})
					require.NoError(t, err)
					require.FileExists(t, filepath.Join(probe, hostileMods, "a.ko"))

					d, err := bad.Digest()
					require.NoError(t, err)
					off := -1
					if where == "middle" {
						size, _ := bad.Size()
						off = int(size / 2)
						if kind == "plain" {
							off = 512 + 100 // inside a.ko's content
						}
					}
					reg.Tamper(d, imagetest.FlipByte(off))
					_, err = c.Extract(ctx, insecure(ref), dest, ExtractOptions{KernelVersion: hostileKernel})
					require.Error(t, err)
					assert.ErrorIs(t, err, ErrDigestMismatch)
					assert.Equal(t, reason.ImageCorrupt, reason.Of(err), "%v", err)
					assert.ErrorContains(t, err, "layer 1 ("+d.String()+")")
					assert.Equal(t, before, imagetest.Snapshot(t, base), "dest unchanged, no temporary directory")
				})
			}
		}
	}
}

// TestExtractDiffIDMismatch: a blob that matches its digest but whose
// content is not the image config's diff ID is refused.
func TestExtractDiffIDMismatch(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	base, dest, _, before := hostileSetup(t)
	l := imagetest.Layer(t, imagetest.File(hostileMods+"/a.ko", "A"))
	other, err := imagetest.Layer(t, imagetest.File(hostileMods+"/b.ko", "B")).DiffID()
	require.NoError(t, err)
	img, err := mutate.Append(imagetest.Image(t), mutate.Addendum{Layer: wrongDiffID{l, other}})
	require.NoError(t, err)
	tag, _ := reg.Push(t, "kmm/diffid:v1", img)
	_, err = insecureClient(t).Extract(context.Background(), insecure(tag), dest, ExtractOptions{KernelVersion: hostileKernel})
	require.Error(t, err)
	assert.Equal(t, reason.ImageCorrupt, reason.Of(err))
	assert.ErrorContains(t, err, "the image config's diff ID is "+other.String())
	assert.ErrorContains(t, err, "layer 0 (sha256:")
	assert.Equal(t, before, imagetest.Snapshot(t, base))
}

// wrongDiffID is a layer that reports another layer's diff ID.
type wrongDiffID struct {
	v1.Layer
	diffID v1.Hash
}

func (w wrongDiffID) DiffID() (v1.Hash, error) { return w.diffID, nil }

// TestExtractLimits: a layer of 200,000 empty files, a path deeper than
// the limit and a chain of directories created for deep files each fail
// with an error naming the entry and the limit.
func TestExtractLimits(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	c := insecureClient(t)
	many := make([]imagetest.Entry, 0, 100_010)
	for i := range 100_010 {
		many = append(many, imagetest.File(fmt.Sprintf("%s/f/%06d", hostileMods, i), ""))
	}
	deep := hostileMods + strings.Repeat("/d", 61) + "/x.ko"
	cases := map[string]struct {
		entries []imagetest.Entry
		opts    ExtractOptions
		want    string
	}{
		"100,010 empty files": {entries: many,
			want: fmt.Sprintf("%q: the image holds more than the 100000-entry limit (ExtractOptions.MaxEntries)", hostileMods+"/f/099995")},
		"deep path": {entries: []imagetest.Entry{imagetest.File(deep, "x")},
			want: fmt.Sprintf("%q: %q is 66 levels deep, more than the 64-level limit (ExtractOptions.MaxPathDepth)", deep, deep)},
		"deep link target": {entries: []imagetest.Entry{imagetest.Symlink(hostileMods+"/l", strings.Repeat("./", 10)+strings.Repeat("a/", 130))},
			want: "more than twice the 64-level limit"},
		"directories count": {entries: []imagetest.Entry{imagetest.File(hostileMods+"/a/b/c/d/e.ko", "x")},
			opts: ExtractOptions{MaxEntries: 6},
			want: fmt.Sprintf("%q: the image holds more than the 6-entry limit", hostileMods+"/a/b/c/d/e.ko")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			base, dest, _, before := hostileSetup(t)
			tag, _ := reg.Push(t, "kmm/"+strings.NewReplacer(" ", "-", ",", "").Replace(name)+":v1", imagetest.Image(t, imagetest.Layer(t, tc.entries...)))
			tc.opts.KernelVersion = hostileKernel
			_, err := c.Extract(context.Background(), insecure(tag), dest, tc.opts)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrUnsafeEntry)
			assert.Equal(t, reason.UnsafeImage, reason.Of(err))
			assert.ErrorContains(t, err, tc.want)
			assert.Equal(t, before, imagetest.Snapshot(t, base))
		})
	}
}

// TestExtractLocalFailureIsNotTheRegistry: a destination that cannot be
// written is a LocalIOError, not RegistryUnavailable.
func TestExtractLocalFailureIsNotTheRegistry(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	tag, _ := reg.Push(t, "kmm/local:v1", imagetest.Image(t, imagetest.Layer(t, imagetest.File(hostileMods+"/a.ko", "A"))))
	blocker := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(blocker, nil, 0o644))
	_, err := insecureClient(t).Extract(context.Background(), insecure(tag), filepath.Join(blocker, "kmod"), ExtractOptions{KernelVersion: hostileKernel})
	require.Error(t, err)
	assert.Equal(t, reason.LocalIOError, reason.Of(err), "%v", err)
	var pe *os.PathError
	assert.True(t, errors.As(err, &pe))
}

// TestExtractDiskFull: running out of space while writing a file is a
// LocalIOError naming the file, and leaves nothing behind.
func TestExtractDiskFull(t *testing.T) {
	base := t.TempDir()
	full := filepath.Join(base, "full")
	require.NoError(t, os.Mkdir(full, 0o755))
	err := syscall.Mount("tmpfs", full, "tmpfs", 0, "size=256k")
	testenv.Need(t, "a tmpfs mount (root)", err == nil, "run the tests as root")
	t.Cleanup(func() { syscall.Unmount(full, 0) })
	reg := imagetest.NewRegistry(t)
	tag, _ := reg.Push(t, "kmm/big:v1", imagetest.Image(t, imagetest.Layer(t, imagetest.File(hostileMods+"/big.ko", strings.Repeat("x", 1<<20)))))
	_, err = insecureClient(t).Extract(context.Background(), insecure(tag), filepath.Join(full, "kmod"), ExtractOptions{KernelVersion: hostileKernel})
	require.Error(t, err)
	assert.Equal(t, reason.LocalIOError, reason.Of(err), "%v", err)
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.ErrorContains(t, err, fmt.Sprintf("writing %q", hostileMods+"/big.ko"))
	entries, _ := os.ReadDir(full)
	assert.Empty(t, entries, "no temporary directory left")
}

// TestExtractWhiteoutsKeepTheirLayer: a whiteout or an opaque directory
// hides what lower layers put there, not what its own layer writes.
func TestExtractWhiteoutsKeepTheirLayer(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	m := hostileMods
	img := imagetest.Image(t,
		imagetest.Layer(t, imagetest.File(m+"/d/old.ko", "old"), imagetest.File(m+"/d/sub/lower.ko", "lower"), imagetest.File(m+"/gone.ko", "g")),
		imagetest.Layer(t,
			imagetest.File(m+"/d/new.ko", "new"), imagetest.File(m+"/d/sub/upper.ko", "upper"),
			imagetest.Opaque(m+"/d"),
			imagetest.File(m+"/gone.ko", "again"), imagetest.Whiteout(m, "gone.ko")))
	tag, _ := reg.Push(t, "kmm/whiteouts:v1", img)
	dest := filepath.Join(t.TempDir(), "kmod")
	_, err := insecureClient(t).Extract(context.Background(), insecure(tag), dest, ExtractOptions{KernelVersion: hostileKernel})
	require.NoError(t, err)
	assert.Equal(t, []string{m + "/d/new.ko: new", m + "/d/sub/upper.ko: upper", m + "/gone.ko: again"}, listTree(t, dest))
}

// TestExtractZstdWindowBomb: a zstd layer whose header declares a 1 TiB
// window is refused as a corrupt layer instead of making the decoder
// allocate it.
func TestExtractZstdWindowBomb(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	bomb := static.NewLayer(bombtest.ZstdWindow(40, imagetest.Tar(imagetest.File(hostileMods+"/a.ko", "A"))), types.OCILayerZStd)
	tag, _ := reg.Push(t, "kmm/zstd-bomb:v1", imagetest.Image(t, bomb))
	base, dest, _, before := hostileSetup(t)
	_, err := insecureClient(t).Extract(context.Background(), insecure(tag), dest, ExtractOptions{KernelVersion: hostileKernel})
	require.Error(t, err)
	assert.Equal(t, reason.ImageCorrupt, reason.Of(err), "%v", err)
	assert.ErrorContains(t, err, "layer 0 (sha256:")
	assert.ErrorContains(t, err, "is not a readable layer")
	assert.Equal(t, before, imagetest.Snapshot(t, base))
}
