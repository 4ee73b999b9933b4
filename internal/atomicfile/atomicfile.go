// Package atomicfile writes files so that readers see either the old
// content or the new one, never a part: the data goes to a temporary file
// in the same directory, which is then renamed over the target.
// WriteFiles does the same for a set of files that belong together.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes data to path with the given permissions, atomically.
// On failure the temporary file is removed and path is untouched.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}

// Write is WriteFile for content that write streams to w, so it need not
// be held in memory. If write fails, path is untouched.
func Write(path string, perm os.FileMode, write func(w io.Writer) error) error {
	tmp, err := writeTemp(path, perm, write)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("could not write %s: %w", path, err)
	}
	return nil
}

// writeTemp writes a temporary file next to path and returns its name.
func writeTemp(path string, perm os.FileMode, write func(w io.Writer) error) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("could not create %s: %w", path, err)
	}
	name := tmp.Name()
	err = write(tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(name, perm)
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("could not write %s: %w", path, err)
	}
	return name, nil
}
