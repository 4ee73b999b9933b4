package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// set returns n files named f0... with content prefix+index.
func set(n int, prefix string) []File {
	var out []File
	for i := range n {
		out = append(out, File{Name: fmt.Sprint("f", i), Data: []byte(fmt.Sprint(prefix, i)), Perm: 0o644})
	}
	return out
}

// contents reads every file of dir.
func contents(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	out := map[string]string{}
	for _, e := range entries {
		if e.IsDir() {
			out[e.Name()] = "<dir>"
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		out[e.Name()] = string(data)
	}
	return out
}

func names(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestWriteFilesReplacesTheSet(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, WriteFiles(dir, set(10, "old")))
	require.NoError(t, WriteFiles(dir, set(10, "new")))
	got := contents(t, dir)
	assert.Len(t, got, 10, "no temporary or kept file left: %v", names(got))
	for i := range 10 {
		assert.Equal(t, fmt.Sprint("new", i), got[fmt.Sprint("f", i)])
	}
}

// TestWriteFilesRenameFailsMidway makes the k-th rename fail and checks
// that the files renamed before it are put back: the directory holds the
// old set, byte for byte, and nothing else; a file new to the set is
// removed again.
func TestWriteFilesRenameFailsMidway(t *testing.T) {
	for _, k := range []int{0, 1, 5, 9} {
		t.Run(fmt.Sprint("rename ", k), func(t *testing.T) {
			dir := t.TempDir()
			old := set(9, "old") // f9 is new in the next set
			require.NoError(t, WriteFiles(dir, old))
			before := contents(t, dir)
			calls := 0
			err := writeFiles(dir, set(10, "new"), func(o, n string) error {
				calls++
				if calls == k+1 {
					return errors.New("injected")
				}
				return os.Rename(o, n)
			})
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf("could not replace %s: injected (the previous files are back in place)", filepath.Join(dir, fmt.Sprint("f", k))))
			assert.Equal(t, before, contents(t, dir))
		})
	}
}

// TestWriteFilesRollbackFails makes a rename fail and putting a file back
// fail too (its kept copy is gone), and checks that the error names the
// file that stayed new, and that the others are back.
func TestWriteFilesRollbackFails(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, WriteFiles(dir, set(4, "old")))
	calls := 0
	err := writeFiles(dir, set(4, "new"), func(o, n string) error {
		calls++
		switch calls {
		case 2:
			// Lose f0's kept copy, so it cannot be put back.
			matches, _ := filepath.Glob(filepath.Join(dir, ".f0.tmp*.old"))
			require.Len(t, matches, 1)
			require.NoError(t, os.Remove(matches[0]))
		case 3:
			return errors.New("injected")
		}
		return os.Rename(o, n)
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "could not replace "+filepath.Join(dir, "f2")+": injected; putting the previous files back failed too: "+filepath.Join(dir, "f0")+" is new, its previous content is in ")
	got := contents(t, dir)
	assert.Equal(t, map[string]string{"f0": "new0", "f1": "old1", "f2": "old2", "f3": "old3"}, got)
}

// TestWriteFilesStagingFails fails before any rename: a target that is a
// directory, and a file that cannot be written. No file is replaced and
// no temporary is left.
func TestWriteFilesStagingFails(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, WriteFiles(dir, set(5, "old")))
	require.NoError(t, os.Remove(filepath.Join(dir, "f3")))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "f3", "x"), 0o755))
	before := contents(t, dir)
	err := WriteFiles(dir, set(5, "new"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "could not replace "+filepath.Join(dir, "f3")+" (no file was replaced): is a directory")
	assert.Equal(t, before, contents(t, dir))

	err = WriteFiles(filepath.Join(dir, "missing"), set(2, "x"))
	assert.ErrorContains(t, err, "could not create")
	assert.Equal(t, before, contents(t, dir))
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o600))
	err := Write(p, 0o644, func(w io.Writer) error {
		io.WriteString(w, "partial")
		return errors.New("source failed")
	})
	assert.ErrorContains(t, err, "source failed")
	data, _ := os.ReadFile(p)
	assert.Equal(t, "old", string(data))
	require.NoError(t, Write(p, 0o644, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }))
	data, _ = os.ReadFile(p)
	assert.Equal(t, "new", string(data))
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 1)
}
