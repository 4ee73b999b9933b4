package loader

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Worker does on a node what KMM's worker does, natively: for a
// ModuleConfig and the extracted content of its image, remove in-tree
// modules, copy firmware and point the kernel at it, load; or unload and
// remove the firmware it copied.
type Worker struct {
	// Native loads and unloads.
	Native *Native
	// FirmwareHostPath is the host firmware directory; "" means
	// /lib/firmware.
	FirmwareHostPath string
	// SetFirmwareClassPath also writes FirmwareHostPath to
	// /sys/module/firmware_class/parameters/path.
	SetFirmwareClassPath bool
	// SysRoot is where sysfs is mounted; "" means /sys.
	SysRoot string
}

// ErrRawArgs says the config asks for modprobe.rawArgs, which only kmod's
// modprobe can run.
var ErrRawArgs = errors.New("modprobe.rawArgs runs kmod's modprobe, which the native loader does not use; set modprobe.moduleName instead")

func (w *Worker) firmwareDir() string {
	if w.FirmwareHostPath == "" {
		return "/lib/firmware"
	}
	return w.FirmwareHostPath
}

func (w *Worker) sysRoot() string {
	if w.SysRoot == "" {
		return "/sys"
	}
	return w.SysRoot
}

// request builds the loader request for cfg and the image content at
// imageRoot.
func (w *Worker) request(cfg *v1beta1.ModuleConfig, imageRoot string) (Request, error) {
	if cfg.Modprobe.RawArgs != nil {
		return Request{}, ErrRawArgs
	}
	tree, err := OpenTree(filepath.Join(imageRoot, cfg.Modprobe.DirName), cfg.KernelVersion)
	if err != nil {
		return Request{}, err
	}
	return Request{
		Tree:                  tree,
		Module:                cfg.Modprobe.ModuleName,
		Parameters:            cfg.Modprobe.Parameters,
		LoadingOrder:          cfg.Modprobe.ModulesLoadingOrder,
		InTreeModulesToRemove: cfg.InTreeToRemove(),
	}, nil
}

// Load loads the module of cfg from imageRoot.
func (w *Worker) Load(ctx context.Context, cfg *v1beta1.ModuleConfig, imageRoot string) (*Result, error) {
	req, err := w.request(cfg, imageRoot)
	if err != nil {
		return nil, err
	}
	if w.SetFirmwareClassPath {
		if err := SetFirmwareClassPath(w.sysRoot(), w.firmwareDir()); err != nil {
			return nil, err
		}
	}
	if cfg.Modprobe.FirmwarePath != "" {
		if _, err := CopyFirmware(filepath.Join(imageRoot, cfg.Modprobe.FirmwarePath), w.firmwareDir()); err != nil {
			return nil, err
		}
	}
	return w.Native.Load(ctx, req)
}

// Unload unloads the module of cfg and removes the firmware its image
// ships from the host directory.
func (w *Worker) Unload(ctx context.Context, cfg *v1beta1.ModuleConfig, imageRoot string) (*Result, error) {
	req, err := w.request(cfg, imageRoot)
	if err != nil {
		return nil, err
	}
	res, err := w.Native.Unload(ctx, req)
	if err != nil {
		return res, err
	}
	if cfg.Modprobe.FirmwarePath != "" {
		if err := RemoveFirmware(filepath.Join(imageRoot, cfg.Modprobe.FirmwarePath), w.firmwareDir()); err != nil {
			return res, err
		}
	}
	return res, nil
}
