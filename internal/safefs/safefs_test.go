package safefs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// setup makes base/tree (opened as a Tree) and base/host/secret (0600).
func setup(t *testing.T) (*Tree, string, string) {
	base := t.TempDir()
	host := filepath.Join(base, "host")
	require.NoError(t, os.MkdirAll(filepath.Join(host, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(host, "secret"), []byte("secret"), 0o600))
	dir := filepath.Join(base, "tree")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755))
	tr, err := Open(dir)
	require.NoError(t, err)
	t.Cleanup(func() { tr.Close() })
	return tr, dir, host
}

func TestEscapesAreRefused(t *testing.T) {
	tr, dir, host := setup(t)
	// Links made behind the tree's back, as a hostile layer leaves them.
	require.NoError(t, os.Symlink("../../../host", filepath.Join(dir, "a", "b", "rel")))
	require.NoError(t, os.Symlink(strings.Repeat("../", 40)+host[1:], filepath.Join(dir, "a", "clamped")))
	require.NoError(t, os.Symlink(host, filepath.Join(dir, "abs")))
	require.NoError(t, os.Symlink("..", filepath.Join(dir, "a", "b", "up")))
	require.NoError(t, os.Symlink("up/../../host", filepath.Join(dir, "a", "b", "chained")))
	for _, via := range []string{"a/b/rel", "a/clamped", "abs", "a/b/chained"} {
		t.Run(via, func(t *testing.T) {
			_, err := tr.Create(via+"/pwned", 0o644)
			assert.ErrorIs(t, err, ErrEscapes)
			assert.ErrorIs(t, tr.MkdirAll(via+"/d", 0o755), ErrEscapes)
			assert.ErrorIs(t, tr.RemoveAll(via+"/secret"), ErrEscapes)
			assert.ErrorIs(t, tr.Remove(via+"/secret"), ErrEscapes)
			assert.ErrorIs(t, tr.Link(via+"/secret", "stolen"), ErrEscapes)
			_, err = tr.ReadDir(via)
			assert.ErrorIs(t, err, ErrEscapes)
			_, err = tr.ReadFile(via + "/secret")
			assert.ErrorIs(t, err, ErrEscapes)
			assert.ErrorIs(t, tr.WriteFile(via+"/pwned", strings.NewReader("x"), 0o644), ErrEscapes)
			assert.ErrorIs(t, tr.CheckLink(via), ErrEscapes)
			var pe *fs.PathError
			require.ErrorAs(t, tr.CheckLink(via), &pe)
			assert.Equal(t, via, pe.Path)
		})
	}
	assert.ErrorIs(t, tr.Symlink("../../x", "a/new"), ErrEscapes)
	assert.ErrorIs(t, tr.Symlink("/etc", "a/new"), ErrEscapes)
	assert.ErrorIs(t, tr.Symlink("b/up/../../../x", "a/new"), ErrEscapes)
	_, err := os.Lstat(filepath.Join(dir, "a", "new"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "a refused link is not left behind")
	assert.ErrorIs(t, tr.CheckLinks(), ErrEscapes)

	entries, err := os.ReadDir(host)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "nothing created in the host directory")
	b, err := os.ReadFile(filepath.Join(host, "secret"))
	require.NoError(t, err)
	assert.Equal(t, "secret", string(b))
}

func TestInsideLinksAreFollowed(t *testing.T) {
	tr, dir, _ := setup(t)
	require.NoError(t, tr.Symlink("b", "a/lb"))
	require.NoError(t, tr.Symlink("../a/lb/../b", "a/b2"))
	require.NoError(t, tr.Symlink("missing/x", "a/dangling"))
	f, err := tr.Create("a/b2/f", 0o600)
	require.NoError(t, err)
	f.WriteString("F")
	require.NoError(t, f.Close())
	b, err := os.ReadFile(filepath.Join(dir, "a", "b", "f"))
	require.NoError(t, err)
	assert.Equal(t, "F", string(b))
	require.NoError(t, tr.Link("a/lb/f", "hard"))
	require.NoError(t, tr.CheckLinks())
	var seen []string
	require.NoError(t, tr.Walk(".", func(name string, d fs.DirEntry) error {
		seen = append(seen, name)
		return nil
	}))
	assert.Equal(t, []string{"a", "a/b", "a/b/f", "a/b2", "a/dangling", "a/lb", "hard"}, seen)
}

func TestCreateReplacesWithoutFollowing(t *testing.T) {
	tr, dir, _ := setup(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "target"), []byte("keep"), 0o644))
	require.NoError(t, tr.Symlink("target", "link"))
	require.NoError(t, tr.Link("target", "hard"))
	for _, name := range []string{"link", "hard", "a"} {
		f, err := tr.Create(name, 0o644)
		require.NoError(t, err, name)
		f.WriteString("new")
		require.NoError(t, f.Close())
		fi, err := os.Lstat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.True(t, fi.Mode().IsRegular(), name)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "target"))
	assert.Equal(t, "keep", string(b), "neither the link nor the hard link was written through")
}

func TestWriteFileIsAtomicAndExact(t *testing.T) {
	tr, dir, _ := setup(t)
	require.NoError(t, os.Symlink("../../outside", filepath.Join(dir, "a", "l")))
	require.NoError(t, tr.WriteFile("a/l", strings.NewReader("new"), 0o640))
	fi, err := os.Lstat(filepath.Join(dir, "a", "l"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), fi.Mode(), "the link is replaced by the file, with exactly perm")
	entries, _ := os.ReadDir(filepath.Join(dir, "a"))
	assert.Len(t, entries, 2, "no temporary file left")
	err = tr.WriteFile("a/b", strings.NewReader("x"), 0o644)
	assert.True(t, errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EEXIST), "%v", err)
	entries, _ = os.ReadDir(filepath.Join(dir, "a"))
	assert.Len(t, entries, 2, "no temporary file left after a failure")
}

func TestErrorsOtherThanEscapesKeepTheirErrno(t *testing.T) {
	tr, dir, _ := setup(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	err := tr.MkdirAll("file/x", 0o755)
	assert.ErrorIs(t, err, syscall.ENOTDIR)
	assert.NotErrorIs(t, err, ErrEscapes)
	require.NoError(t, os.Symlink("loop2", filepath.Join(dir, "loop1")))
	require.NoError(t, os.Symlink("loop1", filepath.Join(dir, "loop2")))
	assert.ErrorIs(t, tr.CheckLink("loop1"), syscall.ELOOP)
	assert.ErrorIs(t, tr.Link("a", "x"), ErrNotRegular)
	assert.ErrorIs(t, tr.RemoveAll("/"), fs.ErrInvalid, "the root itself is not removed")
}

func TestSub(t *testing.T) {
	tr, dir, _ := setup(t)
	require.NoError(t, os.Symlink("../..", filepath.Join(dir, "a", "out")))
	_, err := tr.Sub("a/out")
	assert.ErrorIs(t, err, ErrEscapes)
	sub, err := tr.Sub("/a/")
	require.NoError(t, err)
	defer sub.Close()
	_, err = sub.Stat("out")
	assert.ErrorIs(t, err, ErrEscapes, "the sub-tree is its own root")
	fi, err := sub.Lstat("b")
	require.NoError(t, err)
	assert.True(t, fi.IsDir())
}
