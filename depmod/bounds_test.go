package depmod

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/bombtest"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

// smallTmpfs mounts a tmpfs of size bytes on a new directory for the test.
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size))
	testenv.Need(t, "a tmpfs mount (root)", err == nil, fmt.Sprintf("run as root: mount tmpfs: %v", err))
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a file in dir that leaves about free bytes of its file
// system free.
func fill(t *testing.T, dir string, free int64) {
	t.Helper()
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &st))
	avail := int64(st.Bavail) * st.Bsize
	require.Greater(t, avail, free)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "filler"), make([]byte, avail-free), 0o644))
}

// TestFullDiskKeepsThePreviousSet runs depmod into a tmpfs (-o) that has
// room for three of the ten new files only, and checks that the previous
// ten files are still there byte for byte, with no temporary file left,
// and that the error names the file that could not be written.
func TestFullDiskKeepsThePreviousSet(t *testing.T) {
	out := smallTmpfs(t, 512<<10)
	base := t.TempDir()
	smallTree().write(t, base, kv)
	_, _, err := runIn(t, base, Options{OutDir: out})
	require.NoError(t, err)
	dir := filepath.Join(out, "lib", "modules", kv)
	before := readOutputs(t, dir)
	require.Len(t, before, 10)

	// A bigger tree, so every output changes.
	mods := map[string]elftest.Module{}
	for i := range 40 {
		mods[fmt.Sprintf("kernel/m%d.ko", i)] = elftest.Module{Modinfo: []string{fmt.Sprintf("alias=m%d-*", i)}, Exports: []elftest.Export{{Name: fmt.Sprint("s", i)}}}
	}
	modulesTree(mods).write(t, base, kv)
	fill(t, out, 3*4096)
	_, _, err = runIn(t, base, Options{OutDir: out})
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.Contains(t, err.Error(), "could not write "+dir+"/modules.")
	assert.Equal(t, before, readOutputs(t, dir), "the previous files are untouched")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 10, "no temporary file left")

	// With room again, the run replaces all ten.
	require.NoError(t, os.Remove(filepath.Join(out, "filler")))
	_, _, err = runIn(t, base, Options{OutDir: out})
	require.NoError(t, err)
	after := readOutputs(t, dir)
	assert.NotEqual(t, before["modules.dep"], after["modules.dep"])
	assert.Contains(t, string(after["modules.dep"]), "kernel/m39.ko:")
}

// TestBlockedPathKeepsThePreviousSet puts a directory where one output
// goes: the run fails naming it, before any file is replaced.
func TestBlockedPathKeepsThePreviousSet(t *testing.T) {
	base := t.TempDir()
	smallTree().write(t, base, kv)
	_, _, err := runIn(t, base, Options{})
	require.NoError(t, err)
	dir := filepath.Join(base, "lib", "modules", kv)
	require.NoError(t, os.Remove(filepath.Join(dir, "modules.symbols")))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "modules.symbols", "x"), 0o755))
	readOthers := func() map[string][]byte {
		files := map[string][]byte{}
		for _, name := range OutputFiles() {
			if name != "modules.symbols" {
				data, err := os.ReadFile(filepath.Join(dir, name))
				require.NoError(t, err)
				files[name] = data
			}
		}
		return files
	}
	before := readOthers()

	modulesTree(map[string]elftest.Module{"kernel/c.ko": {Modinfo: []string{"alias=c"}}}).write(t, base, kv)
	_, _, err = runIn(t, base, Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "could not replace "+dir+"/modules.symbols (no file was replaced): is a directory")
	assert.Equal(t, before, readOthers())
}

// TestBombsInTree indexes a tree holding hostile modules next to good
// ones, in a child process limited to 2.25 GiB of address space with
// GOMEMLIMIT set: each bomb is reported by path with the limit it broke,
// as an unreadable module, the good modules are indexed, and the process
// does not run out of memory. Before the limits, one such zstd file took
// 2.8 GiB and one xz file 4.2 GiB.
func TestBombsInTree(t *testing.T) {
	payload := elftest.Module{Modinfo: []string{"alias=bomb"}}.Bytes()
	bombs := map[string][]byte{
		"kernel/window.ko.zst": bombtest.ZstdWindow(31, payload),
		"kernel/frame.ko.zst":  bombtest.ZstdFrameSize(3<<30, payload),
		"kernel/rle.ko.zst":    bombtest.ZstdRLE(1 << 30),
		"kernel/dict.ko.xz":    bombtest.XZDict(40, payload),
		"kernel/zeros.ko.gz":   bombtest.GzipZeros(8 << 20)[:4096], // cut short
	}
	if bombtest.Child("depmod") {
		base := t.TempDir()
		tr := smallTree()
		for p, data := range bombs {
			tr[p] = data
		}
		tr.write(t, base, kv)
		bombtest.Sparse(t, filepath.Join(base, "lib", "modules", kv, "kernel", "sparse.ko.gz"), 6<<30, bombtest.GzipZeros(1<<10))
		res, msgs, err := runIn(t, base, Options{Workers: 1})
		for _, m := range msgs {
			fmt.Println("MSG", m)
		}
		fmt.Println("RESULT", res.Modules, err)
		dep, _ := os.ReadFile(filepath.Join(base, "lib", "modules", kv, "modules.dep"))
		fmt.Printf("DEP %q\n", dep)
		return
	}
	out, err := bombtest.Limited(t, "TestBombsInTree", "depmod", 2304<<20)
	require.NoError(t, err, "%s", out)
	assert.Contains(t, out, "RESULT 8 <nil>")
	assert.Contains(t, out, `kernel/b-b.ko: kernel/a.ko\n`)
	for name, what := range map[string]string{
		"window.ko.zst": "zstd data: window of 2147483648 bytes (2.0 GiB) is over the limit of 134217728 bytes (128.0 MiB)",
		"frame.ko.zst":  "zstd data: frame size of 3221225472 bytes (3.0 GiB) is over the limit of 536870912 bytes (512.0 MiB)",
		"rle.ko.zst":    "zstd data: decompressed size is over the limit of 536870912 bytes (512.0 MiB)",
		"dict.ko.xz":    "xz data: dictionary of 4294967295 bytes (4.0 GiB) is over the limit of 134217728 bytes (128.0 MiB)",
		"sparse.ko.gz":  "file size of 6442450944 bytes (6.0 GiB) is over the limit of 536870912 bytes (512.0 MiB)",
		"zeros.ko.gz":   "gzip data: unexpected EOF",
	} {
		want := "MSG ERROR: failed to load symbols from " + "/lib/modules/" + kv + "/kernel/" + name + ": " + what
		found := false
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "MSG ERROR: failed to load symbols from ") && strings.Contains(l, "/lib/modules/"+kv+"/kernel/"+name+": "+what) {
				found = true
			}
		}
		assert.True(t, found, "want a line like %q in:\n%s", want, out)
	}
}
