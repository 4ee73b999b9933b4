package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// Native loads modules from a module tree into the running kernel.
type Native struct {
	kernel Kernel
	log    logr.Logger
	dec    *modfile.Decompressor
}

// NewNative returns a Native loader on kernel (LinuxKernel{} for the real
// one).
func NewNative(kernel Kernel, log logr.Logger) (*Native, error) {
	dec, err := modfile.NewDecompressor(0)
	if err != nil {
		return nil, err
	}
	return &Native{kernel: kernel, log: log, dec: dec}, nil
}

// Request says what to load.
type Request struct {
	// Tree is the module tree.
	Tree *Tree
	// Module is the module (or alias) to load.
	Module string
	// Parameters are key=value module parameters.
	Parameters []string
	// LoadingOrder is KMM's modulesLoadingOrder.
	LoadingOrder []string
	// InTreeModulesToRemove are unloaded (with their unused dependencies)
	// before loading.
	InTreeModulesToRemove []string
	// SkipVermagicCheck loads modules whatever kernel they were built for.
	SkipVermagicCheck bool
}

// Result tells what Load or Unload did.
type Result struct {
	// Changed lists the modules loaded or unloaded, in order.
	Changed []string
	// Skipped lists modules already in the wanted state (or built in).
	Skipped []string
}

// Load loads req.Module and what it needs, in order.
func (n *Native) Load(ctx context.Context, req Request) (*Result, error) {
	steps, err := req.Tree.Plan(req.Module, req.Parameters, req.LoadingOrder)
	if err != nil {
		return nil, err
	}
	release, err := n.kernel.Release()
	if err != nil {
		return nil, err
	}
	if req.Tree.KernelVersion != release {
		n.log.Info("module tree and running kernel differ", "tree", req.Tree.KernelVersion, "kernel", release)
	}
	res := &Result{}
	for _, name := range req.InTreeModulesToRemove {
		removed, err := n.removeWithUnusedDeps(NormalizeName(name))
		if err != nil {
			return res, err
		}
		res.Changed = append(res.Changed, removed...)
	}
	loaded, err := n.kernel.Loaded()
	if err != nil {
		return res, err
	}
	// Check every module before loading any, so bad input (a file that is
	// not a module, a foreign vermagic) leaves the node as it was.
	var todo []prepared
	for _, s := range steps {
		if _, ok := loaded[s.Name]; ok || n.kernel.Builtin(s.Name) {
			res.Skipped = append(res.Skipped, s.Name)
			continue
		}
		p, err := n.prepare(s, release, req.SkipVermagicCheck)
		if err != nil {
			return res, err
		}
		todo = append(todo, p)
	}
	for _, p := range todo {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := n.loadOne(p); err != nil {
			return res, err
		}
		n.log.V(1).Info("loaded module", "module", p.step.Name, "path", p.step.Path)
		res.Changed = append(res.Changed, p.step.Name)
	}
	return res, nil
}

// prepared is a module checked and ready to load.
type prepared struct {
	step Step
	elf  []byte
	comp modfile.Compression
}

// fail wraps a load error of step s.
func fail(s Step, err error, hint string) error {
	if hint == "" {
		hint = hintFor("load", err)
	}
	return &Error{Op: "load", Module: s.Name, Path: s.Path, Err: err, Hint: hint}
}

// prepare reads a module file and checks it is a module for this kernel.
func (n *Native) prepare(s Step, release string, skipVermagic bool) (prepared, error) {
	data, err := os.ReadFile(s.Path)
	if err != nil {
		return prepared{}, fail(s, err, "")
	}
	elf, comp, err := n.dec.Decompress(data)
	if err != nil {
		return prepared{}, fail(s, err, "the module file is damaged")
	}
	info, err := modfile.ParseInfo(elf)
	if err != nil {
		return prepared{}, fail(s, err, "the file is not a kernel module")
	}
	if !skipVermagic {
		if vm := vermagicOf(info); vm != release {
			return prepared{}, fail(s, fmt.Errorf("%w: built for %q, running %q", ErrVermagic, vm, release),
				"use the image built for this kernel: check the Module's kernelMappings")
		}
	}
	if comp == modfile.None {
		elf = nil // the kernel reads the file itself
	}
	return prepared{step: s, elf: elf, comp: comp}, nil
}

// loadOne hands a prepared module to the kernel.
func (n *Native) loadOne(p prepared) error {
	s := p.step
	f, err := os.Open(s.Path)
	if err != nil {
		return fail(s, err, "")
	}
	defer f.Close()
	params := strings.Join(s.Params, " ")
	if p.comp == modfile.None {
		err = n.kernel.Load(f, params, false)
	} else {
		err = n.kernel.Load(f, params, true)
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
			// The kernel cannot decompress: hand it the plain ELF.
			var mf *os.File
			if mf, err = memFile(s.Name, p.elf); err == nil {
				err = n.kernel.Load(mf, params, false)
				mf.Close()
			}
		}
	}
	if errors.Is(err, syscall.EEXIST) {
		return nil // loaded meanwhile
	}
	if errors.Is(err, syscall.ENOENT) {
		err = fmt.Errorf("unknown symbol or parameter (%w)", err)
	}
	if err != nil {
		return fail(s, err, "")
	}
	return nil
}

// vermagicOf returns the kernel release a module was built for: the first
// word of its vermagic.
func vermagicOf(info []modfile.KV) string {
	for _, kv := range info {
		if kv.Key == "vermagic" {
			if f := strings.Fields(kv.Value); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// Unload removes req.Module, then its dependencies from the tree that no
// other module uses, in reverse load order. A module still used by others
// is an error for the target and left alone for a dependency.
func (n *Native) Unload(ctx context.Context, req Request) (*Result, error) {
	steps, err := req.Tree.Plan(req.Module, nil, req.LoadingOrder)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	target := steps[len(steps)-1].Name
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i].Name == NormalizeName(req.Module) {
			target = steps[i].Name
		}
	}
	for i := len(steps) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		name := steps[i].Name
		loaded, err := n.kernel.Loaded()
		if err != nil {
			return res, err
		}
		m, ok := loaded[name]
		if !ok {
			res.Skipped = append(res.Skipped, name)
			continue
		}
		if m.RefCount > 0 {
			if name == target {
				return res, &Error{Op: "unload", Module: name, Err: syscall.EBUSY,
					Hint: fmt.Sprintf("still used by %s", strings.Join(m.UsedBy, ", "))}
			}
			res.Skipped = append(res.Skipped, name)
			continue
		}
		if err := n.kernel.Unload(name); err != nil {
			return res, &Error{Op: "unload", Module: name, Err: err, Hint: hintFor("unload", err)}
		}
		n.log.V(1).Info("unloaded module", "module", name)
		res.Changed = append(res.Changed, name)
	}
	return res, nil
}

// removeWithUnusedDeps unloads an in-tree module if it is loaded, then the
// modules it used that nothing else uses any more.
func (n *Native) removeWithUnusedDeps(name string) ([]string, error) {
	loaded, err := n.kernel.Loaded()
	if err != nil {
		return nil, err
	}
	m, ok := loaded[name]
	if !ok {
		return nil, nil
	}
	if m.RefCount > 0 {
		return nil, &Error{Op: "unload", Module: name, Err: syscall.EBUSY,
			Hint: fmt.Sprintf("inTreeModulesToRemove: still used by %s", strings.Join(m.UsedBy, ", "))}
	}
	var deps []string
	for other, om := range loaded {
		for _, u := range om.UsedBy {
			if u == name {
				deps = append(deps, other)
			}
		}
	}
	if err := n.kernel.Unload(name); err != nil {
		return nil, &Error{Op: "unload", Module: name, Err: err, Hint: hintFor("unload", err)}
	}
	removed := []string{name}
	for _, d := range deps {
		now, err := n.kernel.Loaded()
		if err != nil {
			return removed, err
		}
		if dm, ok := now[d]; ok && dm.RefCount == 0 {
			more, err := n.removeWithUnusedDeps(d)
			if err != nil {
				return removed, err
			}
			removed = append(removed, more...)
		}
	}
	return removed, nil
}
