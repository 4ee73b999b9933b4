// Package assemble builds a kernel-module image without a container
// engine: prebuilt .ko files (and firmware) are laid out as KMM expects
// (<dirName>/lib/modules/<kver>/...), optionally signed with the native
// sign-file, indexed with kmmkit's native depmod, and packed into one
// reproducible OCI layer on top of a base image (scratch by default). The
// same input always gives the same digest. The Builder lints the image it
// assembled (package lint) before it pushes it, and fails the build with
// reason.ImageLintFailed and the findings when it would not load.
package assemble

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/ociimage"
)

// File is one file of the image.
type File struct {
	// Path is relative to the module directory for Modules, and to
	// FirmwarePath for Firmware.
	Path string
	Data []byte
}

// Input describes the image to assemble.
type Input struct {
	// KernelVersion names lib/modules/<KernelVersion>.
	KernelVersion string
	// DirName is modprobe.dirName; "" means /opt.
	DirName string
	// Modules are the module files, such as {"extra/nic.ko", ...}.
	Modules []File
	// FirmwarePath is where firmware goes in the image, such as /firmware.
	FirmwarePath string
	// Firmware are the firmware files.
	Firmware []File
	// Signer, when set, signs every module before depmod indexes them.
	Signer *signfile.Signer
	// Base is the base image; nil means scratch.
	Base v1.Image
	// Platform is the image's platform; zero means linux/amd64.
	Platform v1.Platform
	// Created is the image's creation time; zero means the Unix epoch,
	// which keeps digests reproducible.
	Created time.Time
	// Log receives depmod's messages; the zero value means the logger of
	// Assemble's context.
	Log logr.Logger
}

// Assemble builds the image.
func Assemble(ctx context.Context, in Input) (v1.Image, error) { return assemble(ctx, in, nil) }

// assemble builds the image; check, when set, is given the staged root of
// the image (after depmod, before it is packed) and stops the build with
// its error.
func assemble(ctx context.Context, in Input, check func(root string) error) (v1.Image, error) {
	if in.KernelVersion == "" || strings.Contains(in.KernelVersion, "/") {
		return nil, fmt.Errorf("invalid kernel version %q", in.KernelVersion)
	}
	dirName := in.DirName
	if dirName == "" {
		dirName = "/opt"
	}
	dirName = path.Clean("/" + dirName)
	work, err := os.MkdirTemp("", "kmmkit-assemble")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	root := filepath.Join(work, filepath.FromSlash(dirName))
	modDir := filepath.Join(root, "lib", "modules", in.KernelVersion)
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range in.Modules {
		rel, err := cleanRel(f.Path)
		if err != nil {
			return nil, fmt.Errorf("module %q: %w", f.Path, err)
		}
		data := f.Data
		if in.Signer != nil {
			if data, err = in.Signer.Sign(data); err != nil {
				return nil, fmt.Errorf("signing %s: %w", f.Path, err)
			}
		}
		if err := writeFile(filepath.Join(modDir, rel), data); err != nil {
			return nil, err
		}
	}
	// A zero Log is the context's, as depmod.Run takes it.
	if _, err := depmod.Run(ctx, depmod.Options{BaseDir: root, KernelVersion: in.KernelVersion, ConfigPaths: []string{}, Log: in.Log}); err != nil {
		return nil, fmt.Errorf("depmod: %w", err)
	}
	if len(in.Firmware) > 0 {
		if in.FirmwarePath == "" {
			return nil, fmt.Errorf("firmware given without a firmware path")
		}
		fwDir := filepath.Join(work, filepath.FromSlash(path.Clean("/"+in.FirmwarePath)))
		for _, f := range in.Firmware {
			rel, err := cleanRel(f.Path)
			if err != nil {
				return nil, fmt.Errorf("firmware %q: %w", f.Path, err)
			}
			if err := writeFile(filepath.Join(fwDir, rel), f.Data); err != nil {
				return nil, err
			}
		}
	}
	if check != nil {
		if err := check(work); err != nil {
			return nil, err
		}
	}
	layerData, err := tarTree(work)
	if err != nil {
		return nil, err
	}
	p := in.Platform
	if p.OS == "" {
		p = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	return ociimage.Image(ociimage.Spec{
		Base: in.Base, Layer: layerData, Platform: p, Created: in.Created,
		History: v1.History{
			Author:    "kmmkit",
			CreatedBy: fmt.Sprintf("kmmkit assemble: %d modules for %s in %s", len(in.Modules), in.KernelVersion, dirName),
		},
		Config: func(c *v1.Config) {
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Labels["io.kmmkit.kernel-version"] = in.KernelVersion
		},
	})
}

// cleanRel checks a relative path stays where it is put.
func cleanRel(p string) (string, error) {
	c := path.Clean(p)
	if p == "" || path.IsAbs(p) || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("must be a relative path inside its directory")
	}
	return filepath.FromSlash(c), nil
}

func writeFile(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// tarTree packs dir reproducibly: sorted entries, root-owned, fixed
// modes and times.
func tarTree(dir string) ([]byte, error) {
	var paths []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		info, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Format: tar.FormatPAX, Uname: "root", Gname: "root"}
		if info.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
