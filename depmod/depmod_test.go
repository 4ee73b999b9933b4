package depmod

import (
	"github.com/kmmkit/kmmkit/depmod/modfile"

	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/depmod/index"
	"github.com/kmmkit/kmmkit/internal/elftest"
)

const kv = "6.1.0-1-test"

func smallTree() tree {
	return modulesTree(map[string]elftest.Module{
		"kernel/a.ko":   {Modinfo: []string{"alias=a-alias"}, Exports: []elftest.Export{{Name: "sa"}}},
		"kernel/b-b.ko": {Modinfo: []string{"alias=bb*"}, Needs: []elftest.Need{{Name: "sa"}}},
	})
}

func runIn(t *testing.T, base string, o Options) (*Result, []string, error) {
	t.Helper()
	var msgs []string
	o.BaseDir = base
	if o.KernelVersion == "" {
		o.KernelVersion = kv
	}
	if o.ConfigPaths == nil {
		o.ConfigPaths = []string{}
	}
	o.Log = logr.New(&captureSink{add: func(s string) { msgs = append(msgs, s) }})
	res, err := Run(context.Background(), o)
	return res, msgs, err
}

func TestRunWritesEveryFile(t *testing.T) {
	base := t.TempDir()
	smallTree().write(t, base, kv)
	res, _, err := runIn(t, base, Options{})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Modules)
	dir := filepath.Join(base, "lib", "modules", kv)
	files := readOutputs(t, dir)
	assert.Len(t, files, 10)
	assert.Equal(t, "kernel/a.ko:\nkernel/b-b.ko: kernel/a.ko\n", string(files["modules.dep"]), "hash order: a before b_b")
	r, err := index.NewReader(files["modules.dep.bin"])
	require.NoError(t, err)
	line, ok, err := r.Lookup("b_b")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "kernel/b-b.ko: kernel/a.ko", line)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), ".tmp", "no temporary file left behind")
	}
	st, err := os.Stat(filepath.Join(dir, "modules.dep"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
}

// A failing run must leave the previous files exactly as they were.
func TestFailedRunKeepsPreviousFiles(t *testing.T) {
	base := t.TempDir()
	tr := smallTree()
	tr.write(t, base, kv)
	_, _, err := runIn(t, base, Options{})
	require.NoError(t, err)
	dir := filepath.Join(base, "lib", "modules", kv)
	before := readOutputs(t, dir)

	// A non-ASCII alias cannot go into the index.
	tree{"kernel/c.ko": elftest.Module{Modinfo: []string{"alias=caf\xc3\xa9"}}.Bytes()}.write(t, base, kv)
	_, _, err = runIn(t, base, Options{})
	require.ErrorContains(t, err, "bad character 0xc3")
	assert.Equal(t, before, readOutputs(t, dir))

	// A dependency cycle.
	require.NoError(t, os.Remove(filepath.Join(dir, "kernel", "c.ko")))
	tree{
		"kernel/x.ko": elftest.Module{Exports: []elftest.Export{{Name: "sx"}}, Needs: []elftest.Need{{Name: "sy"}}}.Bytes(),
		"kernel/y.ko": elftest.Module{Exports: []elftest.Export{{Name: "sy"}}, Needs: []elftest.Need{{Name: "sx"}}}.Bytes(),
	}.write(t, base, kv)
	res, msgs, err := runIn(t, base, Options{})
	require.ErrorIs(t, err, ErrCycle)
	assert.Equal(t, [][]string{{"y", "x", "y"}}, res.Cycles, "y comes first in hash order")
	assert.Contains(t, msgs, "ERROR: Cycle detected: y -> x -> y")
	assert.Equal(t, before, readOutputs(t, dir))
}

func TestRunErrors(t *testing.T) {
	base := t.TempDir()
	_, _, err := runIn(t, base, Options{})
	assert.ErrorContains(t, err, "could not open directory "+base+"/lib/modules/"+kv)
	_, err = Run(context.Background(), Options{BaseDir: base})
	assert.ErrorContains(t, err, "Bad version passed")
	for _, bad := range []string{"6", "x.1", "6.x", ".1", "6."} {
		_, _, err = runIn(t, base, Options{KernelVersion: bad})
		assert.ErrorContains(t, err, "Bad version passed", bad)
	}
	smallTree().write(t, base, kv)
	_, _, err = runIn(t, base, Options{Files: []string{"relative/a.ko"}})
	assert.ErrorContains(t, err, "relative/a.ko: not absolute path")
	_, msgs, err := runIn(t, base, Options{ErrSyms: true})
	require.NoError(t, err)
	assert.Contains(t, msgs, "WARNING: -e needs -E or -F")
	_, _, err = runIn(t, base, Options{Symvers: filepath.Join(base, "missing.symvers")})
	assert.ErrorContains(t, err, "missing.symvers")
}

func TestRunOutDirAndDryRun(t *testing.T) {
	base, out := t.TempDir(), filepath.Join(t.TempDir(), "new", "root")
	smallTree().write(t, base, kv)
	res, _, err := runIn(t, base, Options{OutDir: out})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(out, "lib", "modules", kv), res.OutputDir)
	assert.Len(t, readOutputs(t, res.OutputDir), 10)
	assert.Empty(t, readOutputs(t, filepath.Join(base, "lib", "modules", kv)), "inputs are only read")

	var stdout bytes.Buffer
	_, _, err = runIn(t, base, Options{DryRun: &stdout})
	require.NoError(t, err)
	assert.Contains(t, stdout.String(), "kernel/b-b.ko: kernel/a.ko\n")
	assert.Contains(t, stdout.String(), "alias bb* b_b\n")
	assert.Empty(t, readOutputs(t, filepath.Join(base, "lib", "modules", kv)))
}

func TestRunQuick(t *testing.T) {
	base := t.TempDir()
	smallTree().write(t, base, kv)
	res, _, err := runIn(t, base, Options{Quick: true})
	require.NoError(t, err)
	assert.False(t, res.UpToDate, "no modules.dep yet")

	dir := filepath.Join(base, "lib", "modules", kv)
	old := time.Now().Add(-time.Hour)
	for _, m := range []string{"kernel/a.ko", "kernel/b-b.ko"} {
		require.NoError(t, os.Chtimes(filepath.Join(dir, m), old, old))
	}
	res, _, err = runIn(t, base, Options{Quick: true})
	require.NoError(t, err)
	assert.True(t, res.UpToDate)

	future := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(dir, "kernel/a.ko"), future, future))
	res, _, err = runIn(t, base, Options{Quick: true})
	require.NoError(t, err)
	assert.False(t, res.UpToDate, "a module newer than modules.dep")
}

func TestRunCanceled(t *testing.T) {
	base := t.TempDir()
	smallTree().write(t, base, kv)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, Options{BaseDir: base, KernelVersion: kv, ConfigPaths: []string{}})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, readOutputs(t, filepath.Join(base, "lib", "modules", kv)))
}

func TestHelpers(t *testing.T) {
	assert.Equal(t, "snd_hda", modfile.ModuleName("snd-hda.ko.xz"))
	assert.Equal(t, "foo", modfile.ModuleName("foo.bar.ko"))
	assert.Equal(t, []string{"a\n", "bc\n", "d"}, fgetsLines([]byte("a\nbc\nd"), 4096))
	assert.Equal(t, []string{"abc", "de\n"}, fgetsLines([]byte("abcde\n"), 4), "long lines split as fgets does")
	for in, want := range map[string]string{
		"of:N*T*Cfoo-bar[a-z]": "of:N*T*Cfoo_bar[a-z]",
		"a-[x-y]-b":            "a_[x-y]_b",
		"plain":                "plain",
	} {
		got, ok := normalizeAlias(in)
		assert.True(t, ok)
		assert.Equal(t, want, got)
	}
	for _, bad := range []string{"a]b", "a[b", "]"} {
		_, ok := normalizeAlias(bad)
		assert.False(t, ok, bad)
	}
	ma, mi, ok := scanMajorMinor("char-major-10-200x", "char-major-")
	assert.True(t, ok)
	assert.Equal(t, []uint64{10, 200}, []uint64{ma, mi})
	_, _, ok = scanMajorMinor("char-major-10", "char-major-")
	assert.False(t, ok)
	assert.True(t, kverMatches("*", "anything"))
	assert.True(t, kverMatches(`6\.1\..*`, "6.1.0-56-amd64"))
	assert.True(t, kverMatches(`1\.0`, "6.1.0-56"), "searched anywhere, not anchored")
	assert.False(t, kverMatches("(", "6.1.0"), "a bad regexp never matches")
}

func TestConfigLines(t *testing.T) {
	lines := configLines([]byte("# comment\n\nsearch a \\\n b\nexclude x\\y z\n  # not a comment\ntrailing \\"))
	var got []string
	for _, l := range lines {
		got = append(got, l.text)
	}
	assert.Equal(t, []string{"search a  b", "exclude xy z", "  # not a comment", "trailing "}, got)
	assert.Equal(t, 3, lines[0].number)
}
