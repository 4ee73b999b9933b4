// Package safefs works on a directory tree without ever leaving it. Every
// name is resolved beneath the tree's root by the kernel, one component at
// a time (os.Root: openat with O_NOFOLLOW, the root held as a directory
// descriptor), so no "..", absolute symbolic link, chain of relative links
// or hard link can reach a file outside the tree, however the tree's links
// are arranged. Links inside the tree are followed; links that lead out
// fail with ErrEscapes.
//
// It is the one containment helper of kmmkit: image extraction writes
// hostile layers with it, the assembler reads a builder stage's files with
// it, and the worker copies and removes firmware with it.
package safefs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"strconv"
	"syscall"
)

// ErrEscapes is wrapped (in an *fs.PathError naming the path) by every
// error about a name, or a symbolic link, that would lead outside the
// tree.
var ErrEscapes = errors.New("path leads outside the directory")

// ErrNotRegular is wrapped by Link's error when the file to link is not a
// regular file.
var ErrNotRegular = errors.New("not a regular file")

// Tree is a directory that every operation stays beneath.
type Tree struct {
	root *os.Root
}

// Open opens the directory dir as a Tree. Symbolic links in dir itself are
// followed: dir is trusted, what is below it is not.
func Open(dir string) (*Tree, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &Tree{root: r}, nil
}

// Close releases the tree's directory descriptor.
func (t *Tree) Close() error { return t.root.Close() }

// Dir returns the directory the tree was opened at.
func (t *Tree) Dir() string { return t.root.Name() }

// Sub opens the directory name of the tree as a Tree of its own; name is
// resolved beneath t.
func (t *Tree) Sub(name string) (*Tree, error) {
	r, err := t.root.OpenRoot(clean(name))
	if err != nil {
		return nil, wrap(err)
	}
	return &Tree{root: r}, nil
}

// clean turns a slash-separated name ("a/b", "/a/b", "./a/") into a name
// relative to the root; the root itself is ".". ".." elements are
// resolved lexically and cannot climb above the root.
func clean(name string) string {
	c := path.Clean("/" + name)
	if c == "/" {
		return "."
	}
	return c[1:]
}

// wrap replaces os.Root's "path escapes from parent" (the only error it
// reports that is not a system call's) by ErrEscapes, so callers can tell
// an escape from a file system failure.
func wrap(err error) error {
	var pe *fs.PathError
	if err == nil || !errors.As(err, &pe) {
		return err
	}
	if _, ok := pe.Err.(syscall.Errno); ok || errors.Is(pe.Err, ErrEscapes) {
		return err
	}
	return &fs.PathError{Op: pe.Op, Path: pe.Path, Err: ErrEscapes}
}

// Lstat describes name without following a final symbolic link.
func (t *Tree) Lstat(name string) (fs.FileInfo, error) {
	fi, err := t.root.Lstat(clean(name))
	return fi, wrap(err)
}

// Stat describes name, following symbolic links beneath the tree.
func (t *Tree) Stat(name string) (fs.FileInfo, error) {
	fi, err := t.root.Stat(clean(name))
	return fi, wrap(err)
}

// MkdirAll creates the directory name and its missing parents.
func (t *Tree) MkdirAll(name string, perm fs.FileMode) error {
	return wrap(t.root.MkdirAll(clean(name), perm))
}

// Remove removes the file, link or empty directory name; a final link is
// removed, not followed.
func (t *Tree) Remove(name string) error { return wrap(t.root.Remove(clean(name))) }

// RemoveAll removes name and everything below it; a final link is removed,
// not followed. A missing name is no error. The root itself cannot be
// removed.
func (t *Tree) RemoveAll(name string) error {
	n := clean(name)
	if n == "." {
		return &fs.PathError{Op: "removeall", Path: name, Err: fs.ErrInvalid}
	}
	return wrap(t.root.RemoveAll(n))
}

// Open opens name for reading.
func (t *Tree) Open(name string) (*os.File, error) {
	f, err := t.root.Open(clean(name))
	return f, wrap(err)
}

// ReadFile reads the whole file name.
func (t *Tree) ReadFile(name string) ([]byte, error) {
	b, err := t.root.ReadFile(clean(name))
	return b, wrap(err)
}

// Readlink returns the target of the symbolic link name.
func (t *Tree) Readlink(name string) (string, error) {
	s, err := t.root.Readlink(clean(name))
	return s, wrap(err)
}

// ReadDir lists the directory name, sorted by file name.
func (t *Tree) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := fs.ReadDir(t.root.FS(), clean(name))
	return e, wrap(err)
}

// Create creates the regular file name for writing with permissions perm,
// replacing whatever was there: a file, a link (which is removed, never
// followed or written through) or a directory tree.
func (t *Tree) Create(name string, perm fs.FileMode) (*os.File, error) {
	n := clean(name)
	f, err := t.root.OpenFile(n, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if !errors.Is(err, fs.ErrExist) {
		return f, wrap(err)
	}
	if err := t.RemoveAll(n); err != nil {
		return nil, err
	}
	f, err = t.root.OpenFile(n, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	return f, wrap(err)
}

// WriteFile writes the content of r to name atomically: to a temporary
// file in the same directory, then renamed over name (a link at name is
// replaced, not followed). Readers see the old content or the new one.
// perm is applied exactly, whatever the umask.
func (t *Tree) WriteFile(name string, r io.Reader, perm fs.FileMode) error {
	n := clean(name)
	dir, base := path.Split(n)
	var f *os.File
	var tmp string
	for range 100 {
		tmp = dir + "." + base + ".tmp" + strconv.FormatUint(rand.Uint64(), 36)
		var err error
		f, err = t.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			return wrap(err)
		}
	}
	if f == nil {
		return &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
	}
	_, err := io.Copy(f, r)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = wrap(t.root.Rename(tmp, n))
	}
	if err != nil {
		t.root.Remove(tmp)
		return err
	}
	return nil
}

// Symlink creates name as a symbolic link to target, replacing whatever
// was there. An absolute target, or one that leads outside the tree from
// where the link is, is refused (ErrEscapes) and nothing is left at name.
func (t *Tree) Symlink(target, name string) error {
	n := clean(name)
	if path.IsAbs(target) {
		return &fs.PathError{Op: "symlink", Path: name, Err: fmt.Errorf("absolute target %q: %w", target, ErrEscapes)}
	}
	if err := t.RemoveAll(n); err != nil {
		return err
	}
	if err := wrap(t.root.Symlink(target, n)); err != nil {
		return err
	}
	if err := t.CheckLink(n); err != nil {
		t.root.Remove(n)
		return err
	}
	return nil
}

// Link creates name as a hard link to the regular file oldname of the
// tree, replacing whatever was at name. oldname is resolved beneath the
// tree, so a file outside it can never be linked in.
func (t *Tree) Link(oldname, name string) error {
	o, n := clean(oldname), clean(name)
	fi, err := t.Lstat(o)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "link", Path: oldname, Err: ErrNotRegular}
	}
	if o == n {
		return nil
	}
	if err := t.RemoveAll(n); err != nil {
		return err
	}
	return wrap(t.root.Link(o, n))
}

// CheckLink checks that the symbolic link name, followed as the kernel
// follows it, leads to a file beneath the tree or to nothing (a dangling
// link, whose first missing component stops any lookup). A link that
// leads out (ErrEscapes) or through more links than os.Root follows
// (ELOOP) is an error.
// The error is an *fs.PathError whose Path is the link's name.
func (t *Tree) CheckLink(name string) error {
	n := clean(name)
	_, err := t.root.Stat(n)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return nil
	}
	err = wrap(err)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &fs.PathError{Op: "follow", Path: n, Err: err}
}

// CheckLinks runs CheckLink on every symbolic link of the tree and returns
// the first failure.
func (t *Tree) CheckLinks() error {
	return t.Walk(".", func(name string, d fs.DirEntry) error {
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		return t.CheckLink(name)
	})
}

// Walk calls fn for every file below the directory dir of the tree (dir
// itself excluded), in lexical order, with the slash-separated name
// relative to the tree's root. Links are reported, never followed. An
// error from fn stops the walk.
func (t *Tree) Walk(dir string, fn func(name string, d fs.DirEntry) error) error {
	d := clean(dir)
	return fs.WalkDir(t.root.FS(), d, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return wrap(err)
		}
		if p == d {
			return nil
		}
		return fn(p, e)
	})
}
