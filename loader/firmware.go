package loader

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmmkit/kmmkit/internal/atomicfile"
)

// CopyFirmware copies every file under src into dst, keeping relative
// paths; each file is written to a temporary name and renamed. It returns
// the relative paths copied.
func CopyFirmware(src, dst string) ([]string, error) {
	var copied []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			if err := copyFile(p, target); err != nil {
				return err
			}
			copied = append(copied, rel)
		}
		return nil
	})
	if err != nil {
		return copied, fmt.Errorf("copying firmware from %s to %s: %w", src, dst, err)
	}
	return copied, nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(dst, data, 0o644)
}

// RemoveFirmware deletes from dst every file that exists under src (the
// image's firmware), and nothing else, as KMM's worker does on unload.
func RemoveFirmware(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if err := os.Remove(filepath.Join(dst, rel)); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	})
}

// SetFirmwareClassPath points the kernel's firmware loader at dir
// (/sys/module/firmware_class/parameters/path), unless it already does.
func SetFirmwareClassPath(sysRoot, dir string) error {
	p := filepath.Join(sysRoot, "module", "firmware_class", "parameters", "path")
	cur, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("reading the firmware search path: %w", err)
	}
	if strings.TrimSpace(string(cur)) == dir {
		return nil
	}
	if err := os.WriteFile(p, []byte(dir), 0o644); err != nil {
		return fmt.Errorf("setting the firmware search path to %s: %w (the worker needs to write sysfs)", dir, err)
	}
	return nil
}
