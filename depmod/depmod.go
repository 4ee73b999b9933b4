package depmod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// DefaultExtensions are the module file extensions depmod indexes. Debian
// 12's kmod is built without zlib and ignores ".ko.gz"; kmmkit reads it, as
// kmod built with zlib does.
func DefaultExtensions() []string { return []string{".ko", ".ko.gz", ".ko.xz", ".ko.zst"} }

// ErrCycle is wrapped by the error Run returns when modules depend on each
// other in a cycle; no file is written then.
var ErrCycle = errors.New("modules in dependency cycles")

// Options configure a depmod run. The zero value, with KernelVersion set,
// behaves as `depmod KVER`.
type Options struct {
	// BaseDir is prepended to /lib/modules/<KernelVersion> (depmod -b).
	BaseDir string
	// OutDir, when set, receives the output files under
	// <OutDir>/lib/modules/<KernelVersion>, created if needed (depmod -o).
	OutDir string
	// KernelVersion names the module directory. It must start with
	// <number>.<number>, as kmod requires.
	KernelVersion string
	// ConfigPaths replace DefaultConfigPaths (depmod -C). A nil slice
	// means the defaults; use an empty non-nil slice for no configuration.
	ConfigPaths []string
	// Symvers is a Module.symvers file giving the kernel's symbols and
	// their CRCs (depmod -E). It takes precedence over SystemMap.
	Symvers string
	// SystemMap is a System.map file giving the kernel's symbols (-F).
	SystemMap string
	// ErrSyms warns about unknown symbols and CRC mismatches (-e); it
	// needs Symvers or SystemMap.
	ErrSyms bool
	// SymbolPrefix is a character removed from the front of symbol names
	// (-P), or 0.
	SymbolPrefix byte
	// WarnDuplicates reports values stored twice under one index key (-w).
	WarnDuplicates bool
	// Quick does nothing when modules.dep is newer than every module (-A).
	Quick bool
	// DryRun, when not nil, receives the text outputs instead of any file
	// being written (-n).
	DryRun io.Writer
	// Files, when not empty, are the only modules indexed, as absolute
	// paths; no configuration is read then (depmod KVER FILE...).
	Files []string
	// Extensions are the module file extensions; nil means
	// DefaultExtensions.
	Extensions []string
	// Workers read modules in parallel; 0 means GOMAXPROCS.
	Workers int
	// Log receives kmod's messages; see LevelWarning and the other
	// levels. The zero value means the logger of Run's context
	// (logr.FromContextOrDiscard).
	Log logr.Logger
}

// Result tells what a run did.
type Result struct {
	// Dir is the module directory that was indexed.
	Dir string
	// OutputDir is where the files were written.
	OutputDir string
	// Modules is the number of modules indexed.
	Modules int
	// UpToDate is set when Quick found nothing newer and wrote nothing.
	UpToDate bool
	// Cycles lists each dependency cycle found, as module names from the
	// first back to it.
	Cycles [][]string
}

// module is one module of the run.
type module struct {
	candidate
	idx     int
	file    *modfile.File
	deps    []*module
	users   int
	sortIdx int
}

// Run indexes a module tree and writes kmod's ten output files.
func Run(ctx context.Context, opts Options) (*Result, error) {
	log := &logger{log: opts.Log}
	if opts.Log.GetSink() == nil {
		log.log = logr.FromContextOrDiscard(ctx)
	}
	if err := checkKernelVersion(opts.KernelVersion); err != nil {
		return nil, err
	}
	if opts.ErrSyms && opts.Symvers == "" && opts.SystemMap == "" {
		log.warnf("-e needs -E or -F")
		opts.ErrSyms = false
	}
	dirname := opts.BaseDir + "/lib/modules/" + opts.KernelVersion
	outdir := dirname
	if opts.OutDir != "" {
		outdir = filepath.Join(opts.OutDir, "lib", "modules", opts.KernelVersion)
	}
	res := &Result{Dir: dirname, OutputDir: outdir}
	exts := opts.Extensions
	if exts == nil {
		exts = DefaultExtensions()
	}

	if opts.Quick {
		if opts.DryRun != nil {
			res.UpToDate = true
			return res, nil
		}
		if upToDate(dirname, outdir, exts, log) {
			res.UpToDate = true
			return res, nil
		}
	}

	tPhase := time.Now()
	phase := func(name string) {
		log.debugf("%s took %.1f ms", name, float64(time.Since(tPhase).Microseconds())/1000)
		tPhase = time.Now()
	}
	f := &finder{dirname: dirname, exts: exts, log: log, byName: map[string]*candidate{}}
	if len(opts.Files) > 0 {
		f.cfg = &config{excludes: map[string]bool{}, searches: []searchEntry{{path: "updates"}}}
		for _, p := range opts.Files {
			if !strings.HasPrefix(p, "/") {
				return nil, fmt.Errorf("%s: not absolute path", p)
			}
			f.add(f.newCandidate(p))
		}
	} else {
		paths := opts.ConfigPaths
		if paths == nil {
			paths = DefaultConfigPaths()
		}
		f.cfg = loadConfig(paths, opts.KernelVersion, log)
		if err := f.walk(dirname, 0); err != nil {
			return nil, fmt.Errorf("could not open directory %s: %w", dirname, err)
		}
		for _, ext := range f.cfg.externals {
			if err := f.walk(ext, 0); err != nil {
				log.errorf("could not open directory %s: %v", ext, err)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	phase("finding modules")
	mods := orderModules(f.byName, dirname, log)
	if len(mods) > 65534 {
		return nil, fmt.Errorf("too many modules: %d, at most 65534", len(mods))
	}
	res.Modules = len(mods)
	if err := loadModules(ctx, mods, opts.Workers, log); err != nil {
		return nil, err
	}

	phase("reading modules")
	syms, err := newSymbolTable(opts, log)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		if m.file == nil {
			continue
		}
		for _, s := range m.file.Exports {
			syms.add(stripPrefix(s.Name, opts.SymbolPrefix), m, s.CRC)
		}
	}
	computeDeps(mods, syms, opts, log)
	for _, m := range mods {
		if m.file != nil {
			// Only .modinfo is needed from here on; let the rest go.
			m.file.Needs, m.file.Exports = nil, nil
		}
	}
	if cycles := sortDeps(mods); cycles != nil {
		res.Cycles = cycles
		return res, fmt.Errorf("%w: %d modules", ErrCycle, countCycleModules(cycles, log))
	}

	phase("resolving dependencies")
	outs, err := buildOutputs(mods, syms, dirname, opts, log)
	phase("building indexes")
	if err != nil {
		return nil, err
	}
	if opts.DryRun != nil {
		for _, o := range outs {
			if o.text {
				if _, err := opts.DryRun.Write(o.data); err != nil {
					return nil, err
				}
			}
		}
		return res, nil
	}
	if err := writeOutputs(outdir, outs, opts.OutDir != ""); err != nil {
		return nil, err
	}
	phase("writing files")
	return res, nil
}

// checkKernelVersion applies kmod's "%u.%u" check.
func checkKernelVersion(v string) error {
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	j := i + 1
	for j < len(v) && v[j] >= '0' && v[j] <= '9' {
		j++
	}
	if i == 0 || i >= len(v) || v[i] != '.' || j == i+1 {
		return fmt.Errorf("Bad version passed %s", v)
	}
	return nil
}

// orderModules returns the modules in kmod's array order: hash order of
// the by-name table, then stably sorted by modules.order.
func orderModules(byName map[string]*candidate, dirname string, log *logger) []*module {
	mods := make([]*module, 0, len(byName))
	for _, c := range byName {
		mods = append(mods, &module{candidate: *c})
	}
	sort.Slice(mods, func(i, j int) bool {
		bi, bj := hashKey(mods[i].modname)&511, hashKey(mods[j].modname)&511
		if bi != bj {
			return bi < bj
		}
		return mods[i].modname < mods[j].modname
	})
	applyModulesOrder(mods, dirname, log)
	for i, m := range mods {
		m.idx = i
	}
	return mods
}

// applyModulesOrder sorts the modules listed in modules.order first, in
// line order, keeping the others in their order after them.
func applyModulesOrder(mods []*module, dirname string, log *logger) {
	path := dirname + "/modules.order"
	data, err := os.ReadFile(path)
	if err != nil {
		log.warnf("could not open modules.order at %s: %v", dirname, unwrapPathError(err))
		return
	}
	lines := fgetsLines(data, 4096)
	for i, l := range lines {
		if !strings.HasSuffix(l, "\n") {
			log.errorf("%s:%d corrupted line misses '\\n'", path, i+1)
			return
		}
	}
	byUncrel := make(map[string]*module, len(mods))
	for _, m := range mods {
		if m.uncrelpath != "" {
			byUncrel[m.uncrelpath] = m
		}
	}
	keys := make(map[*module]int, len(mods))
	total := len(lines) + 1
	for i, l := range lines {
		if m, ok := byUncrel[strings.TrimSuffix(l, "\n")]; ok {
			keys[m] = i + 1 - total
		}
	}
	sort.SliceStable(mods, func(i, j int) bool {
		ki, ok := keys[mods[i]]
		if !ok {
			ki = 1
		}
		kj, ok := keys[mods[j]]
		if !ok {
			kj = 1
		}
		return ki < kj
	})
}

// fgetsLines splits data as repeated fgets calls with a buffer of size
// bytes would: each piece ends after a newline or holds size-1 bytes.
func fgetsLines(data []byte, size int) []string {
	var out []string
	for len(data) > 0 {
		n := len(data)
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			n = i + 1
		}
		n = min(n, size-1)
		out = append(out, string(data[:n]))
		data = data[n:]
	}
	return out
}

// unwrapPathError drops the path from an *os.PathError for kmod-like
// messages.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// loadModules reads every module with several workers. A module that
// cannot be read stays in the run with no symbols, as in kmod.
func loadModules(ctx context.Context, mods []*module, workers int, log *logger) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	dec, err := modfile.NewDecompressor()
	if err != nil {
		return err
	}
	defer dec.Close()
	errs := make([]error, len(mods))
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			parser := modfile.NewParser(dec)
			parser.KeepInfo = func(key string) bool { return key == "alias" || key == "softdep" }
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(mods) || ctx.Err() != nil {
					return
				}
				mods[i].file, errs[i] = parser.ParseFile(mods[i].path)
				errs[i] = unwrapPathError(errs[i])
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, m := range mods {
		switch {
		case errs[i] != nil:
			log.errorf("failed to load symbols from %s: %v", m.path, errs[i])
		case !m.file.HasModinfo:
			log.warnf("%s: no .modinfo section: the module has no aliases", m.path)
		}
	}
	return nil
}
