package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmmkit/kmmkit/internal/safefs"
)

// CopyFirmware copies every regular file under src into dst, keeping
// relative paths, and returns the relative paths copied. Each file is
// written to a temporary name and renamed, with mode 0644. src is trusted
// as a directory; what is below it is not: symbolic links under src are
// not copied or followed, and nothing is read from outside src nor written
// outside dst, whatever links either holds (internal/safefs). Use
// CopyImageFirmware when the firmware directory itself comes from an
// image.
func CopyFirmware(src, dst string) ([]string, error) {
	in, err := safefs.Open(src)
	if err != nil {
		return nil, fmt.Errorf("copying firmware from %s to %s: %w", src, dst, err)
	}
	defer in.Close()
	return copyFirmware(in, src, dst)
}

// CopyImageFirmware copies the firmware directory firmwarePath of the
// image content at imageRoot (as CopyFirmware does), resolving
// firmwarePath beneath imageRoot: an image whose firmware directory is a
// link out of it is refused.
func CopyImageFirmware(imageRoot, firmwarePath, dst string) ([]string, error) {
	in, err := openImageDir(imageRoot, firmwarePath)
	if err != nil {
		return nil, fmt.Errorf("copying firmware from %s to %s: %w", filepath.Join(imageRoot, firmwarePath), dst, err)
	}
	defer in.Close()
	return copyFirmware(in, filepath.Join(imageRoot, firmwarePath), dst)
}

// openImageDir opens the directory dir of the image content at root.
func openImageDir(root, dir string) (*safefs.Tree, error) {
	img, err := safefs.Open(root)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	return img.Sub(dir)
}

func copyFirmware(in *safefs.Tree, src, dst string) ([]string, error) {
	fail := func(err error) error { return fmt.Errorf("copying firmware from %s to %s: %w", src, dst, err) }
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, fail(err)
	}
	out, err := safefs.Open(dst)
	if err != nil {
		return nil, fail(err)
	}
	defer out.Close()
	var copied []string
	err = in.Walk(".", func(rel string, d fs.DirEntry) error {
		switch {
		case d.IsDir():
			return out.MkdirAll(rel, 0o755)
		case d.Type().IsRegular():
			f, err := in.Open(rel)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := out.WriteFile(rel, f, 0o644); err != nil {
				return err
			}
			copied = append(copied, rel)
		}
		return nil
	})
	if err != nil {
		return copied, fail(err)
	}
	return copied, nil
}

// RemoveFirmware deletes from dst every regular file that exists under src
// (the image's firmware), and nothing else, as KMM's worker does on
// unload. Nothing outside dst is removed, whatever links dst or src hold.
func RemoveFirmware(src, dst string) error {
	in, err := safefs.Open(src)
	if err != nil {
		return fmt.Errorf("removing firmware of %s from %s: %w", src, dst, err)
	}
	defer in.Close()
	return removeFirmware(in, src, dst)
}

// RemoveImageFirmware is RemoveFirmware for the firmware directory
// firmwarePath of the image content at imageRoot, resolved beneath it.
func RemoveImageFirmware(imageRoot, firmwarePath, dst string) error {
	in, err := openImageDir(imageRoot, firmwarePath)
	if err != nil {
		return fmt.Errorf("removing firmware of %s from %s: %w", filepath.Join(imageRoot, firmwarePath), dst, err)
	}
	defer in.Close()
	return removeFirmware(in, filepath.Join(imageRoot, firmwarePath), dst)
}

func removeFirmware(in *safefs.Tree, src, dst string) error {
	out, err := safefs.Open(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		defer out.Close()
		err = in.Walk(".", func(rel string, d fs.DirEntry) error {
			if !d.Type().IsRegular() {
				return nil
			}
			if err := out.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("removing firmware of %s from %s: %w", src, dst, err)
	}
	return nil
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
