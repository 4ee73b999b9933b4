package loader

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmmkit/kmmkit/depmod/index"
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

// parseSoftdeps reads "softdep <mod> pre: a b post: c" lines.
func (t *Tree) parseSoftdeps(data []byte) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		mod := NormalizeName(f[1])
		sd := t.softdeps[mod]
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

// resolveAlias maps an alias to a module name with modules.alias.bin.
func (t *Tree) resolveAlias(name string) (string, bool) {
	if t.alias == nil {
		return "", false
	}
	vals, err := t.alias.Match(NormalizeName(name))
	if err != nil || len(vals) == 0 {
		return "", false
	}
	return vals[0].Value, true
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
func moduleNameOf(path string) string {
	base := filepath.Base(path)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	return NormalizeName(base)
}

// Step is one module to load, in order.
type Step struct {
	// Name is the module name.
	Name string
	// Path is the module file.
	Path string
	// Params are its parameters.
	Params []string
}

// Plan returns the modules to load for name, in load order, as modprobe
// orders them: soft "pre" dependencies, then hard dependencies (the
// deepest first), then the module, then soft "post" dependencies.
// loadingOrder is KMM's modulesLoadingOrder ([name, dep1, dep2, ...]: dep1
// must be loaded before name, dep2 before dep1, ...). params go to name.
func (t *Tree) Plan(name string, params []string, loadingOrder []string) ([]Step, error) {
	extra := map[string][]string{}
	for i := 0; i+1 < len(loadingOrder); i++ {
		m := NormalizeName(loadingOrder[i])
		extra[m] = append(extra[m], loadingOrder[i+1])
	}
	p := &planner{t: t, seen: map[string]bool{}, extraPre: extra}
	target := NormalizeName(name)
	if _, _, err := t.entry(target); errors.Is(err, ErrModuleNotFound) {
		if m, ok := t.resolveAlias(name); ok {
			target = m
		}
	}
	if err := p.add(target, 0); err != nil {
		return nil, err
	}
	for i := range p.steps {
		if p.steps[i].Name == target {
			p.steps[i].Params = append([]string(nil), params...)
		}
	}
	return p.steps, nil
}

// planner builds a load order.
type planner struct {
	t        *Tree
	seen     map[string]bool
	steps    []Step
	extraPre map[string][]string
}

func (p *planner) add(name string, depth int) error {
	name = NormalizeName(name)
	if p.seen[name] {
		return nil
	}
	if depth > 64 {
		return fmt.Errorf("soft dependencies of %s nest more than 64 deep", name)
	}
	path, deps, err := p.t.entry(name)
	if errors.Is(err, ErrModuleNotFound) {
		if m, ok := p.t.resolveAlias(name); ok && NormalizeName(m) != name {
			p.seen[name] = true
			return p.add(m, depth+1)
		}
	}
	if err != nil {
		return err
	}
	p.seen[name] = true
	sd := p.t.softdeps[name]
	for _, pre := range append(append([]string(nil), p.extraPre[name]...), sd.pre...) {
		if err := p.add(pre, depth+1); err != nil && !errors.Is(err, ErrModuleNotFound) {
			return err
		}
	}
	for i := len(deps) - 1; i >= 0; i-- {
		d := moduleNameOf(deps[i])
		if !p.seen[d] {
			p.seen[d] = true
			p.steps = append(p.steps, Step{Name: d, Path: deps[i]})
		}
	}
	p.steps = append(p.steps, Step{Name: name, Path: path})
	for _, post := range sd.post {
		if err := p.add(post, depth+1); err != nil && !errors.Is(err, ErrModuleNotFound) {
			return err
		}
	}
	return nil
}
