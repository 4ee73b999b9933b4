package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kmmkit/kmmkit/internal/modprobe"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Worker does on a node what KMM's worker does, natively: for a
// ModuleConfig and the extracted content of its image, remove in-tree
// modules, copy firmware and point the kernel at it, load; or unload and
// remove the firmware it copied.
//
// It runs the modprobe command KMM's worker would run
// (v1beta1.ModprobeSpec.LoadArgs and UnloadArgs: rawArgs, or args around
// moduleName and its parameters) with kmod's meaning of its options: -a,
// -r, --first-time, -d, -v and -q; -b, -i and -s change nothing, as the
// worker reads no modprobe.d. Options it cannot honour are refused by
// v1beta1.ValidateModuleConfig, which it runs first: a config that breaks
// a rule fails before anything on the node changes. -d /tmp<dirName> (as
// KMM's worker names the image's copy) is the image's dirName; a command
// without -d (rawArgs) loads from the host's module tree under the host
// root (WithHostRoot).
type Worker struct {
	native           *Native
	firmwareHostPath string
	setFirmwareClass bool
	sysRoot          string
	hostRoot         string
}

// NewWorker returns a Worker that loads and unloads through kernel
// (LinuxKernel{} for the running one), with its own Native loader
// (WithLogger applies to it). It fails without a kernel.
func NewWorker(kernel Kernel, opts ...Option) (*Worker, error) {
	o := newOptions(opts)
	native, err := newNative(kernel, o)
	if err != nil {
		return nil, err
	}
	w := &Worker{native: native, firmwareHostPath: o.firmwareHostPath, setFirmwareClass: o.setFirmwareClass,
		sysRoot: o.sysRoot, hostRoot: o.hostRoot}
	if w.firmwareHostPath == "" {
		w.firmwareHostPath = "/lib/firmware"
	}
	if w.sysRoot == "" {
		w.sysRoot = "/sys"
	}
	if w.hostRoot == "" {
		w.hostRoot = "/"
	}
	return w, nil
}

// ErrConfig is wrapped when a worker config breaks a rule of
// v1beta1.ValidateModuleConfig.
var ErrConfig = errors.New("invalid worker config")

// command checks cfg and returns its modprobe command and the module tree
// it reads, the image's or the host's.
func (w *Worker) command(cfg *v1beta1.ModuleConfig, imageRoot string, unload bool) (*modprobe.Command, *Tree, error) {
	if errs := v1beta1.ValidateModuleConfig(cfg); len(errs) > 0 {
		return nil, nil, fmt.Errorf("%w: %w", ErrConfig, errs.ToAggregate())
	}
	argv := cfg.Modprobe.LoadArgs()
	if unload {
		argv = cfg.Modprobe.UnloadArgs()
	}
	cmd, perrs := modprobe.Parse(argv)
	if len(perrs) > 0 { // ValidateModuleConfig refuses these already
		return nil, nil, fmt.Errorf("%w: modprobe %s: %w", ErrConfig, strings.Join(argv, " "), perrs[0])
	}
	release, err := w.native.kernel.Release()
	if err != nil {
		return nil, nil, err
	}
	// Like modprobe, without -d the running system's tree; with it, the
	// image's dirName (ValidateModuleConfig checked -d names it).
	root, kver := w.hostRoot, release
	if cmd.DirAt >= 0 {
		root = filepath.Join(imageRoot, cfg.Modprobe.DirName)
		if cfg.KernelVersion != "" {
			kver = cfg.KernelVersion
		}
	}
	tree, err := OpenTree(root, kver)
	if err != nil {
		return nil, nil, err
	}
	return cmd, tree, nil
}

// Load loads the module of cfg from imageRoot. Firmware is copied once
// every module has been checked, before anything else changes.
func (w *Worker) Load(ctx context.Context, cfg *v1beta1.ModuleConfig, imageRoot string) (*Result, error) {
	cmd, tree, err := w.command(cfg, imageRoot, false)
	if err != nil {
		return nil, err
	}
	names := modprobe.Values(cmd.Names)
	req := Request{
		Tree: tree, Module: names[0], Modules: names[1:], Parameters: modprobe.Values(cmd.Params),
		InTreeModulesToRemove: cfg.InTreeToRemove(),
		FirstTime:             cmd.FirstTime, Verbose: cmd.Verbose > 0, Quiet: cmd.Quiet,
	}
	if cfg.Modprobe.RawArgs == nil {
		req.LoadingOrder = cfg.Modprobe.ModulesLoadingOrder
	}
	req.BeforeChanges = func() error {
		if w.setFirmwareClass {
			if err := SetFirmwareClassPath(w.sysRoot, w.firmwareHostPath); err != nil {
				return err
			}
		}
		if cfg.Modprobe.FirmwarePath != "" {
			if _, err := CopyImageFirmware(imageRoot, cfg.Modprobe.FirmwarePath, w.firmwareHostPath); err != nil {
				return err
			}
		}
		return nil
	}
	return w.native.Load(ctx, req)
}

// Unload unloads the modules of cfg, each with the dependencies nothing
// else uses, and then removes the firmware its image ships from the host
// directory. As modprobe -r does, it tries every module named and reports
// every failure; firmware stays when one failed.
func (w *Worker) Unload(ctx context.Context, cfg *v1beta1.ModuleConfig, imageRoot string) (*Result, error) {
	cmd, tree, err := w.command(cfg, imageRoot, true)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	var errs []error
	for _, name := range modprobe.Values(cmd.Names) {
		req := Request{Tree: tree, Module: name, FirstTime: cmd.FirstTime, Verbose: cmd.Verbose > 0, Quiet: cmd.Quiet}
		if cfg.Modprobe.RawArgs == nil {
			req.LoadingOrder = cfg.Modprobe.ModulesLoadingOrder
		}
		r, err := w.native.Unload(ctx, req)
		if r != nil {
			res.Changed = append(res.Changed, r.Changed...)
			for _, s := range r.Skipped {
				if !slices.Contains(res.Skipped, s) && !slices.Contains(res.Changed, s) {
					res.Skipped = append(res.Skipped, s)
				}
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return res, errors.Join(errs...)
	}
	if cfg.Modprobe.FirmwarePath != "" {
		if err := RemoveImageFirmware(imageRoot, cfg.Modprobe.FirmwarePath, w.firmwareHostPath); err != nil {
			return res, err
		}
	}
	return res, nil
}
