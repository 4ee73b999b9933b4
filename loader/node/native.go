package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"syscall"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/internal/ctxlog"
	"github.com/kmmkit/kmmkit/internal/modprobe"
)

// Native loads modules from a module tree into the running kernel.
type Native struct {
	kernel Kernel
	log    ctxlog.Logger
	files  *moduleReader
}

// NewNative returns a Native loader on kernel (LinuxKernel{} for the real
// one, loader/node/fake's for tests). Of the options, WithLogger applies;
// the others configure a Worker and are refused here. It fails without a
// kernel.
func NewNative(kernel Kernel, opts ...Option) (*Native, error) {
	o := newOptions(opts)
	if o.worker != "" {
		return nil, fmt.Errorf("node: NewNative: %s configures a Worker (NewWorker)", o.worker)
	}
	return newNative(kernel, o)
}

func newNative(kernel Kernel, o options) (*Native, error) {
	if kernel == nil {
		return nil, errors.New("node: no Kernel (LinuxKernel{} is the running one)")
	}
	files, err := newModuleReader()
	if err != nil {
		return nil, err
	}
	return &Native{kernel: kernel, log: o.log, files: files}, nil
}

// Request says what to load.
type Request struct {
	// Tree is the module tree.
	Tree *Tree
	// Module is the module (or alias) to load.
	Module string
	// Modules are more modules (or aliases) loaded after Module, each
	// with what it needs and without parameters, as modprobe -a loads
	// every name it is given.
	Modules []string
	// Parameters are key=value module parameters of Module.
	Parameters []string
	// LoadingOrder is KMM's modulesLoadingOrder.
	LoadingOrder []string
	// InTreeModulesToRemove are unloaded (with their unused dependencies)
	// before loading.
	InTreeModulesToRemove []string
	// SkipVermagicCheck loads modules whatever kernel they were built for.
	SkipVermagicCheck bool
	// FirstTime fails, before anything changes, when a module asked for
	// is already in the kernel (loaded or built in) on Load, or is not
	// loaded on Unload: modprobe --first-time.
	FirstTime bool
	// Verbose logs each module loaded or unloaded at level 0, as modprobe
	// -v prints its insmod and rmmod lines; Quiet logs nothing (modprobe
	// -q). Errors are returned either way.
	Verbose, Quiet bool
	// BeforeChanges, when set, runs on Load once every module file has
	// been checked and before anything on the node changes (the worker
	// copies firmware there). Its error stops the load.
	BeforeChanges func() error
}

// Result tells what Load or Unload did.
type Result struct {
	// Changed lists the modules loaded or unloaded, in order. After a
	// failed load it holds the in-tree modules removed and the modules
	// that could not be rolled back.
	Changed []string
	// Skipped lists modules already in the wanted state (or built in).
	Skipped []string
	// SrcVersion is, after Load, the srcversion of Module as the kernel
	// shows it (/sys/module/<m>/srcversion): "" when it cannot tell
	// (a module without MODULE_VERSION, a built-in one, a Kernel that is
	// not a BuildReader).
	SrcVersion string
}

// ErrFirstTime is wrapped when Request.FirstTime finds nothing to do.
var ErrFirstTime = errors.New("modprobe --first-time")

func (n *Native) logger(ctx context.Context, req Request) logr.Logger {
	if req.Quiet {
		return logr.Discard()
	}
	return n.log.From(ctx)
}

// step logs one module loaded or unloaded.
func (n *Native) step(ctx context.Context, req Request, msg string, kv ...any) {
	log := n.logger(ctx, req)
	if !req.Verbose {
		log = log.V(1)
	}
	log.Info(msg, kv...)
}

// plan returns the load order of every module the request names, each
// module once; Step.Target marks the ones named. main is the module
// req.Module names (the first, when it is an alias of several).
func plan(req Request) (steps []Step, main string, err error) {
	at := map[string]int{}
	for i, name := range append([]string{req.Module}, req.Modules...) {
		var params []string
		if i == 0 {
			params = req.Parameters
		}
		more, err := req.Tree.Plan(name, params, req.LoadingOrder)
		if err != nil {
			return nil, "", err
		}
		for _, s := range more {
			if i == 0 && s.Target && main == "" {
				main = s.Name
			}
			if j, ok := at[s.Name]; ok {
				steps[j].Target = steps[j].Target || s.Target
				continue
			}
			at[s.Name] = len(steps)
			steps = append(steps, s)
		}
	}
	return steps, main, nil
}

// Load loads req.Module (and req.Modules) with what they need, in order.
// Every module file is read and checked against the running kernel
// before anything changes. If loading fails part way, the modules this
// call loaded are unloaded again, last first, and the *Error says which
// were rolled back and which could not be.
//
// With a Kernel that is a BuildReader, Load checks that the kernel runs
// the image's build of each module of the plan: one already loaded (and
// not an in-tree module to remove) whose srcversion differs from its
// file's fails before anything changes, and so does one just loaded whose
// srcversion is not its file's (it is rolled back); the *Error wraps a
// *BuildMismatchError (reason.ModuleBuildMismatch) naming both. When a
// srcversion is unknown on either side, the versions (MODULE_VERSION)
// are compared if both are known; otherwise nothing is checked.
func (n *Native) Load(ctx context.Context, req Request) (*Result, error) {
	steps, main, err := plan(req)
	if err != nil {
		return nil, err
	}
	release, err := n.kernel.Release()
	if err != nil {
		return nil, err
	}
	log := n.logger(ctx, req)
	if req.Tree.KernelVersion != release {
		log.Info("module tree and running kernel differ", "tree", req.Tree.KernelVersion, "kernel", release)
	}
	loaded, err := n.kernel.Loaded()
	if err != nil {
		return nil, err
	}
	removing := map[string]bool{}
	for _, name := range req.InTreeModulesToRemove {
		removing[NormalizeName(name)] = true
	}
	present := func(loaded map[string]LoadedModule, name string) bool {
		_, ok := loaded[name]
		return ok || n.kernel.Builtin(name)
	}
	if req.FirstTime {
		for _, s := range steps {
			if s.Target && !removing[s.Name] && present(loaded, s.Name) {
				return nil, &Error{Op: "load", Module: s.Name, Path: s.Path, Err: fmt.Errorf("already in the kernel (%w)", ErrFirstTime)}
			}
		}
	}
	kern := &runningKernel{release: release, skip: req.SkipVermagicCheck, kernel: n.kernel, log: log}
	// Check every module before changing anything, so bad input (a file
	// that is not a module, a foreign vermagic) leaves the node as it was.
	ready := map[string]prepared{}
	for _, s := range steps {
		if present(loaded, s.Name) && !removing[s.Name] {
			if _, ok := loaded[s.Name]; ok {
				if err := n.checkLoadedBuild(s); err != nil {
					return nil, err
				}
			}
			continue
		}
		p, err := n.prepare(s, kern)
		if err != nil {
			return nil, err
		}
		ready[s.Name] = p
	}
	if req.BeforeChanges != nil {
		if err := req.BeforeChanges(); err != nil {
			return nil, err
		}
	}
	res := &Result{}
	for _, name := range req.InTreeModulesToRemove {
		removed, err := n.removeWithUnusedDeps(NormalizeName(name))
		res.Changed = append(res.Changed, removed...)
		if err != nil {
			return res, err
		}
	}
	if loaded, err = n.kernel.Loaded(); err != nil {
		return res, err
	}
	var todo []prepared
	for _, s := range steps {
		if present(loaded, s.Name) {
			res.Skipped = append(res.Skipped, s.Name)
			continue
		}
		p, ok := ready[s.Name]
		if !ok { // a dependency of an in-tree module just removed
			if p, err = n.prepare(s, kern); err != nil {
				return res, err
			}
		}
		todo = append(todo, p)
	}
	var done []string
	for _, p := range todo {
		if err := ctx.Err(); err != nil {
			return n.rollback(res, done, fail(p.step, err, "stopped before loading it"))
		}
		inserted, err := n.loadOne(p)
		if err != nil {
			return n.rollback(res, done, err)
		}
		if !inserted {
			res.Skipped = append(res.Skipped, p.step.Name)
			if err := n.checkBuild(p.step, p.build); err != nil {
				return n.rollback(res, done, err)
			}
			continue
		}
		n.step(ctx, req, "insmod", "module", p.step.Name, "path", p.step.Path, "params", modprobe.Options(p.step.Params))
		done = append(done, p.step.Name)
		if err := n.checkBuild(p.step, p.build); err != nil {
			return n.rollback(res, done, err)
		}
	}
	res.Changed = append(res.Changed, done...)
	if live, ok := n.liveBuild(main); ok {
		res.SrcVersion = live.SrcVersion
	}
	return res, nil
}

// rollback unloads the modules this call loaded, last first, after cause
// stopped the load, and records on cause what it did.
func (n *Native) rollback(res *Result, done []string, cause error) (*Result, error) {
	var rolled []string
	var stuck []error
	for i := len(done) - 1; i >= 0; i-- {
		if err := n.kernel.Unload(done[i]); err != nil {
			stuck = append(stuck, &Error{Op: "unload", Module: done[i], Err: err, Hint: hintFor("unload", err)})
			res.Changed = append(res.Changed, done[i])
			continue
		}
		rolled = append(rolled, done[i])
	}
	var le *Error
	if errors.As(cause, &le) {
		le.RolledBack, le.NotRolledBack = rolled, stuck
	}
	return res, cause
}

// runningKernel is what modules are checked against; the vermagic is
// learned once, when a module needs it.
type runningKernel struct {
	release string
	skip    bool
	kernel  Kernel
	log     logr.Logger

	asked    bool
	vermagic string
}

// check compares a module's vermagic with the running kernel.
func (k *runningKernel) check(moduleVermagic string) error {
	if k.skip {
		return nil
	}
	if !k.asked {
		k.asked = true
		vm, err := k.kernel.Vermagic()
		if err != nil {
			k.log.Info("cannot learn the running kernel's vermagic; checking only that modules are built for its release", "release", k.release, "reason", err.Error())
		} else {
			k.vermagic = vm
		}
	}
	return checkVermagic(moduleVermagic, k.release, k.vermagic)
}

// prepared is a module checked and ready to load.
type prepared struct {
	step  Step
	elf   []byte
	comp  modfile.Compression
	build Build
}

// fail wraps a load error of step s.
func fail(s Step, err error, hint string) error {
	if hint == "" {
		hint = hintFor("load", err)
	}
	return &Error{Op: "load", Module: s.Name, Path: s.Path, Err: err, Hint: hint}
}

// prepare reads a module file and checks it is a module for this kernel.
func (n *Native) prepare(s Step, kern *runningKernel) (prepared, error) {
	elf, comp, err := n.files.read(s.Path)
	var limit *modfile.LimitError
	switch {
	case errors.As(err, &limit):
		return prepared{}, fail(s, err, "no kernel module is that large: the image is damaged or hostile")
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return prepared{}, fail(s, err, "")
	case err != nil:
		return prepared{}, fail(s, err, "the module file is damaged")
	}
	info, err := modfile.ParseInfo(elf)
	if err != nil {
		return prepared{}, fail(s, err, "the file is not a kernel module")
	}
	if err := kern.check(infoValue(info, "vermagic")); err != nil {
		hint := ""
		if ve := (*vermagicError)(nil); errors.As(err, &ve) {
			hint = ve.hint
		}
		return prepared{}, fail(s, err, hint)
	}
	if comp == modfile.None {
		elf = nil // the kernel reads the file itself
	}
	return prepared{step: s, elf: elf, comp: comp, build: fileBuild(info)}, nil
}

// loadOne hands a prepared module to the kernel; inserted is false when
// the module turned out to be loaded already.
func (n *Native) loadOne(p prepared) (inserted bool, err error) {
	s := p.step
	f, err := os.Open(s.Path)
	if err != nil {
		return false, fail(s, err, "")
	}
	defer f.Close()
	params := modprobe.Options(s.Params)
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
		return false, nil // loaded meanwhile
	}
	if errors.Is(err, syscall.ENOENT) {
		err = fmt.Errorf("unknown symbol or parameter (%w)", err)
	}
	if err != nil {
		return false, fail(s, err, "")
	}
	return true, nil
}

// infoValue returns the first .modinfo value of key.
func infoValue(info []modfile.KV, key string) string {
	for _, kv := range info {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

// moduleReader turns module files into ELF bytes. It is the loader's one
// use of modfile's decompressors.
type moduleReader struct {
	dec *modfile.Decompressor
}

func newModuleReader() (*moduleReader, error) {
	dec, err := modfile.NewDecompressor()
	if err != nil {
		return nil, err
	}
	return &moduleReader{dec: dec}, nil
}

// read returns a module file's ELF bytes and how the file was
// compressed. Its size, on disk and decompressed, is bounded by
// modfile.DefaultMaxSize; sparse and non-regular files are refused.
func (r *moduleReader) read(path string) ([]byte, modfile.Compression, error) {
	return r.dec.ReadFile(path)
}

// Unload removes req.Module, then its dependencies from the tree that no
// other module uses, in reverse load order. A module the kernel says is
// in use (its reference count or holders, UsageReader) is an *Error
// wrapping an *InUseError (reason.ModuleInUse) for the target, and left
// alone for a dependency; so is an in-tree module to remove on Load.
func (n *Native) Unload(ctx context.Context, req Request) (*Result, error) {
	steps, err := req.Tree.Plan(req.Module, nil, req.LoadingOrder)
	if err != nil {
		return nil, err
	}
	res := &Result{}
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
			if steps[i].Target && req.FirstTime && !n.kernel.Builtin(name) {
				return res, &Error{Op: "unload", Module: name, Err: fmt.Errorf("not in the kernel (%w)", ErrFirstTime)}
			}
			res.Skipped = append(res.Skipped, name)
			continue
		}
		if err := n.inUse(m, ""); err != nil {
			if steps[i].Target {
				return res, err
			}
			res.Skipped = append(res.Skipped, name)
			continue
		}
		if err := n.unloadOne(m, ""); err != nil {
			return res, err
		}
		n.step(ctx, req, "rmmod", "module", name)
		res.Changed = append(res.Changed, name)
	}
	return res, nil
}

// inTreeHint explains an in-tree module that cannot be removed.
const inTreeHint = "it is in inTreeModulesToRemove: stop what uses it, or leave it out"

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
	if err := n.inUse(m, inTreeHint); err != nil {
		return nil, err
	}
	var deps []string
	for other, om := range loaded {
		if slices.Contains(om.UsedBy, name) {
			deps = append(deps, other)
		}
	}
	sort.Strings(deps)
	if err := n.unloadOne(m, inTreeHint); err != nil {
		return nil, err
	}
	removed := []string{name}
	for _, d := range deps {
		now, err := n.kernel.Loaded()
		if err != nil {
			return removed, err
		}
		if dm, ok := now[d]; ok && !n.usage(dm).InUse() {
			more, err := n.removeWithUnusedDeps(d)
			if err != nil {
				return removed, err
			}
			removed = append(removed, more...)
		}
	}
	return removed, nil
}
