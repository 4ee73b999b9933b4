package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmmkit/kmmkit/depmod/index"
	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// Tree is an indexed module tree: <Root>/lib/modules/<KernelVersion>, with
// the files depmod writes.
type Tree struct {
	// Root is the directory that holds lib/modules, modprobe's -d.
	Root string
	// KernelVersion names the module directory.
	KernelVersion string

	dir      string
	dep      *index.Reader
	alias    *index.Reader
	softdeps map[string]softdep
}

// softdep is one module's soft dependencies.
type softdep struct {
	pre, post []string
}

// OpenTree reads the indexes of a module tree. modules.dep.bin is
// required; modules.alias.bin and modules.softdep are used when present.
func OpenTree(root, kernelVersion string) (*Tree, error) {
	t := &Tree{Root: root, KernelVersion: kernelVersion, dir: filepath.Join(root, "lib", "modules", kernelVersion), softdeps: map[string]softdep{}}
	var err error
	if t.dep, err = index.Open(filepath.Join(t.dir, "modules.dep.bin")); err != nil {
		return nil, fmt.Errorf("module tree %s: %w (run depmod on it: kmm depmod -b %s %s)", t.dir, err, root, kernelVersion)
	}
	if a, err := index.Open(filepath.Join(t.dir, "modules.alias.bin")); err == nil {
		t.alias = a
	}
	if data, err := os.ReadFile(filepath.Join(t.dir, "modules.softdep")); err == nil {
		t.parseSoftdeps(data)
	}
	return t, nil
}

// parseSoftdeps reads "softdep <mod> pre: a b post: c" lines. As in
// libkmod, only the first line for a module counts.
func (t *Tree) parseSoftdeps(data []byte) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		mod := NormalizeName(f[1])
		if _, seen := t.softdeps[mod]; seen {
			continue
		}
		var sd softdep
		var cur *[]string
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				cur = &sd.pre
			case "post:":
				cur = &sd.post
			default:
				if cur != nil {
					*cur = append(*cur, w)
				}
			}
		}
		t.softdeps[mod] = sd
	}
}

// NormalizeName turns "-" into "_", as modprobe does with module names.
func NormalizeName(name string) string { return strings.ReplaceAll(name, "-", "_") }

// ErrModuleNotFound says a module is neither in the tree nor an alias of
// one.
var ErrModuleNotFound = errors.New("module not found")

// entry looks up a module: its file and the files it depends on, in
// modules.dep order (a user before what it uses).
func (t *Tree) entry(name string) (path string, deps []string, err error) {
	line, ok, err := t.dep.Lookup(NormalizeName(name))
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "", nil, fmt.Errorf("%w: %q in %s", ErrModuleNotFound, name, t.dir)
	}
	p, rest, _ := strings.Cut(line, ":")
	return t.abs(p), mapSlice(strings.Fields(rest), t.abs), nil
}

// resolveAlias maps an alias to every module that declares it, as
// modprobe does, in index order.
func (t *Tree) resolveAlias(name string) []string {
	if t.alias == nil {
		return nil
	}
	vals, err := t.alias.Match(NormalizeName(name))
	if err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, v := range vals {
		if !seen[v.Value] {
			seen[v.Value] = true
			out = append(out, v.Value)
		}
	}
	return out
}

func (t *Tree) abs(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(t.dir, p)
}

func mapSlice(in []string, f func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}

// moduleNameOf returns the module name of a module file path.
func moduleNameOf(path string) string { return modfile.ModuleName(filepath.Base(path)) }

// Step is one module to load, in order.
type Step struct {
	// Name is the module name.
	Name string
	// Path is the module file.
	Path string
	// Params are its parameters.
	Params []string
	// Target tells that the module was asked for (by name or alias),
	// rather than needed by one that was.
	Target bool
}

// Plan returns the modules to load for name, in load order, exactly as
// libkmod's probe list orders them (modprobe --show-depends): for each
// hard dependency, deepest first, its soft "pre" dependencies, the
// dependency itself and its soft "post" dependencies; then the same for
// the module. A soft dependency naming an alias brings every module of
// that alias. loadingOrder is KMM's modulesLoadingOrder ([name, dep1,
// dep2, ...]: dep1 must be loaded before name, dep2 before dep1, ...),
// applied as the soft dependencies KMM writes for it. params go to name.
func (t *Tree) Plan(name string, params []string, loadingOrder []string) ([]Step, error) {
	extra := map[string][]string{}
	for i := 0; i+1 < len(loadingOrder); i++ {
		m := NormalizeName(loadingOrder[i])
		extra[m] = append(extra[m], loadingOrder[i+1])
	}
	p := &planner{t: t, visited: map[string]bool{}, listed: map[string]bool{}, extraPre: extra}
	targets, err := p.lookup(name)
	if err != nil {
		return nil, err
	}
	for _, target := range targets {
		if err := p.probeList(target, 0); err != nil {
			return nil, err
		}
	}
	for i := range p.steps {
		for _, target := range targets {
			if p.steps[i].Name == target {
				p.steps[i].Params = append([]string(nil), params...)
				p.steps[i].Target = true
			}
		}
	}
	return p.steps, nil
}

// planner builds a load order.
type planner struct {
	t        *Tree
	visited  map[string]bool
	listed   map[string]bool
	steps    []Step
	extraPre map[string][]string
}

// lookup resolves a name to modules: the module itself, or every module
// of an alias.
func (p *planner) lookup(name string) ([]string, error) {
	n := NormalizeName(name)
	if _, _, err := p.t.entry(n); err == nil {
		return []string{n}, nil
	} else if !errors.Is(err, ErrModuleNotFound) {
		return nil, err
	}
	if ms := p.t.resolveAlias(name); len(ms) > 0 {
		return ms, nil
	}
	return nil, fmt.Errorf("%w: %q in %s", ErrModuleNotFound, name, p.t.dir)
}

// probeList adds a module with its dependencies (libkmod's
// __kmod_module_get_probe_list).
func (p *planner) probeList(name string, depth int) error {
	if p.visited[name] {
		return nil
	}
	if depth > 64 {
		return fmt.Errorf("soft dependencies of %s nest more than 64 deep", name)
	}
	p.visited[name] = true
	path, deps, err := p.t.entry(name)
	if err != nil {
		return err
	}
	for i := len(deps) - 1; i >= 0; i-- {
		if err := p.fillSoftdep(moduleNameOf(deps[i]), deps[i], depth); err != nil {
			return err
		}
	}
	return p.fillSoftdep(name, path, depth)
}

// fillSoftdep adds a module between its soft pre and post dependencies
// (libkmod's __kmod_module_fill_softdep).
func (p *planner) fillSoftdep(name, path string, depth int) error {
	// KMM's loading order is a modprobe.d softdep, which libkmod prefers
	// to the module's own.
	sd := p.t.softdeps[name]
	if extra, ok := p.extraPre[name]; ok {
		sd = softdep{pre: extra}
	}
	for _, s := range sd.pre {
		if err := p.soft(s, depth); err != nil {
			return err
		}
	}
	if !p.listed[name] {
		p.listed[name] = true
		p.steps = append(p.steps, Step{Name: name, Path: path})
	}
	for _, s := range sd.post {
		if err := p.soft(s, depth); err != nil {
			return err
		}
	}
	return nil
}

// soft adds the modules a soft dependency names; a name that resolves to
// nothing is skipped, as modprobe skips it.
func (p *planner) soft(name string, depth int) error {
	mods, err := p.lookup(name)
	if errors.Is(err, ErrModuleNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, m := range mods {
		if err := p.probeList(m, depth+1); err != nil {
			return err
		}
	}
	return nil
}
