package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// File is one file of a set WriteFiles writes.
type File struct {
	// Name is the file's name in the directory.
	Name string
	// Data is its whole content.
	Data []byte
	// Perm is its permission bits.
	Perm os.FileMode
}

// WriteFiles replaces files in dir together, as far as a file system
// allows:
//
//  1. Every file is written to a temporary file in dir. If one cannot be
//     written (a full disk, say), the temporaries are removed and no file
//     is replaced.
//  2. Every file that exists is kept under a second name, a hard link
//     next to it. If a target cannot be kept (it is a directory, or the
//     file system has no hard links), nothing is replaced either.
//  3. The temporaries are renamed over the targets, in order. Each rename
//     is atomic, but ten renames are not one step: if one fails, the
//     files already renamed are put back from their kept copies (and the
//     ones that did not exist before are removed), so dir holds the old
//     set again, and the error says so. If putting one back fails too,
//     the error names each file that is new and where its previous
//     content is kept, and those copies are left in place.
//  4. The kept copies are removed.
//
// A reader that opens the files while step 3 runs may see some new and
// some old. Nothing is synced to disk: the set survives a failed write,
// not a power cut.
func WriteFiles(dir string, files []File) error {
	return writeFiles(dir, files, os.Rename)
}

// staged is one file of a set on its way in.
type staged struct {
	target, tmp, kept string
	renamed           bool
}

// writeFiles is WriteFiles with the rename to use, so tests can make one
// fail.
func writeFiles(dir string, files []File, rename func(old, new string) error) (err error) {
	set := make([]staged, 0, len(files))
	defer func() {
		if err == nil {
			return
		}
		for _, s := range set {
			if !s.renamed {
				os.Remove(s.tmp)
			}
		}
	}()
	for _, f := range files {
		target := filepath.Join(dir, f.Name)
		tmp, err := writeTemp(target, f.Perm, func(w io.Writer) error {
			_, err := w.Write(f.Data)
			return err
		})
		if err != nil {
			removeKept(set)
			return err
		}
		set = append(set, staged{target: target, tmp: tmp})
	}
	for i := range set {
		s := &set[i]
		st, err := os.Lstat(s.target)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil && st.IsDir() {
			err = errors.New("is a directory")
		}
		if err == nil {
			s.kept = s.tmp + ".old"
			if err = os.Link(s.target, s.kept); err != nil {
				s.kept = ""
			}
		}
		if err != nil {
			removeKept(set)
			return fmt.Errorf("could not replace %s (no file was replaced): %w", s.target, err)
		}
	}
	for i := range set {
		s := &set[i]
		if err := rename(s.tmp, s.target); err != nil {
			err = fmt.Errorf("could not replace %s: %w", s.target, err)
			if rerr := rollBack(set[:i]); rerr != nil {
				removeKept(set[i:])
				return fmt.Errorf("%w; putting the previous files back failed too: %w", err, rerr)
			}
			removeKept(set)
			return fmt.Errorf("%w (the previous files are back in place)", err)
		}
		s.renamed = true
	}
	removeKept(set)
	return nil
}

// rollBack puts back the previous content of files already renamed; the
// copies it could not put back stay in kept.
func rollBack(done []staged) error {
	var failed []string
	var errs []error
	for i := range done {
		s := &done[i]
		var err error
		if s.kept != "" {
			err = os.Rename(s.kept, s.target)
		} else {
			err = os.Remove(s.target)
		}
		if err != nil {
			errs = append(errs, err)
			if s.kept != "" {
				failed = append(failed, fmt.Sprintf("%s is new, its previous content is in %s", s.target, s.kept))
			} else {
				failed = append(failed, fmt.Sprintf("%s is new and did not exist before", s.target))
			}
			continue
		}
		s.kept = ""
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", strings.Join(failed, "; "), errors.Join(errs...))
}

// removeKept removes the kept copies still there.
func removeKept(set []staged) {
	for i := range set {
		if set[i].kept != "" {
			os.Remove(set[i].kept)
			set[i].kept = ""
		}
	}
}
