package lint

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// depmodOut is what depmod writes for the tree now.
type depmodOut struct {
	// tmp holds the view and the output; the caller removes it.
	tmp string
	// dir holds the ten files.
	dir string
	// deps maps a module name to the names of the modules it needs (its
	// modules.dep line), and paths a module name to its modules.dep path.
	deps  map[string][]string
	paths map[string]string
}

// textFiles are depmod's text outputs, compared line by line.
var textFiles = map[string]bool{"modules.dep": true, "modules.alias": true, "modules.softdep": true, "modules.symbols": true, "modules.devname": true}

// depmod runs kmmkit's depmod on a view of the module directory (the
// host links pointing at the kernel tree when one is given) into a
// temporary directory, and compares its ten files with the tree's. It
// returns nil when depmod cannot index the tree (a dependency cycle,
// which is a finding).
func (l *linter) depmod(ctx context.Context) (*depmodOut, error) {
	tmp, err := os.MkdirTemp("", "kmmkit-lint-depmod-")
	if err != nil {
		return nil, err
	}
	out := &depmodOut{tmp: tmp, deps: map[string][]string{}, paths: map[string]string{}}
	view := filepath.Join(tmp, "view")
	viewDir := filepath.Join(view, "lib", "modules", l.kernel)
	if err := os.MkdirAll(viewDir, 0o755); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	resolved, err := l.fillView(viewDir)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	res, err := depmod.Run(ctx, depmod.Options{BaseDir: view, OutDir: filepath.Join(tmp, "out"), KernelVersion: l.kernel,
		ConfigPaths: []string{}, Log: logr.FromContextOrDiscard(ctx).V(2)})
	if errors.Is(err, depmod.ErrCycle) && res != nil {
		for _, c := range res.Cycles {
			l.add(l.imageDir, RuleDependency, "the modules %s depend on each other in a cycle: none of them can be loaded", strings.Join(c, " -> "))
		}
		os.RemoveAll(tmp)
		return nil, nil
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("depmod of %s: %w", l.imageDir, err)
	}
	out.dir = filepath.Join(tmp, "out", "lib", "modules", l.kernel)
	if err := out.readDeps(); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	l.compareIndexes(out, resolved)
	return out, nil
}

// fillView links every entry of the module directory into viewDir, and
// each host link to the kernel tree (or, for a tree on disk, to where it
// leads, when that exists). resolved is false when a host link cannot be
// followed.
func (l *linter) fillView(viewDir string) (resolved bool, err error) {
	resolved = true
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return false, err
	}
	hosts := map[string]bool{}
	for _, h := range l.rep.HostLinks {
		hosts[path.Base(h)] = true
	}
	for _, e := range entries {
		if hosts[e.Name()] {
			continue
		}
		if err := os.Symlink(filepath.Join(l.dir, e.Name()), filepath.Join(viewDir, e.Name())); err != nil {
			return false, err
		}
	}
	for name := range hosts {
		target := l.host
		if target == "" {
			disk := filepath.Join(l.dir, name)
			if st, err := os.Stat(disk); err == nil && st.IsDir() {
				target = disk
			}
		}
		if target == "" {
			resolved = false
			continue
		}
		if err := os.Symlink(target, filepath.Join(viewDir, name)); err != nil {
			return false, err
		}
	}
	return resolved, nil
}

// readDeps reads the fresh modules.dep.
func (o *depmodOut) readDeps() error {
	data, err := os.ReadFile(filepath.Join(o.dir, "modules.dep"))
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		p, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name := modfile.ModuleName(path.Base(p))
		o.paths[name] = p
		for _, d := range strings.Fields(rest) {
			o.deps[name] = append(o.deps[name], modfile.ModuleName(path.Base(d)))
		}
	}
	return sc.Err()
}

// compareIndexes compares the tree's depmod files with the fresh ones.
func (l *linter) compareIndexes(out *depmodOut, resolved bool) {
	hint := fmt.Sprintf("run depmod -b %s %s (or kmm depmod) after the last module is in place", l.cfg.dirName, l.kernel)
	var missing []string
	absent := 0
	for _, name := range depmod.OutputFiles() {
		have, err := os.ReadFile(filepath.Join(l.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			absent++
			if name == "modules.dep" || name == "modules.dep.bin" {
				l.add(path.Join(l.imageDir, name), RuleDepmodMissing, "missing: the worker cannot find the modules' dependencies; %s", hint)
			} else {
				missing = append(missing, name)
			}
			continue
		}
		if err != nil {
			l.add(path.Join(l.imageDir, name), RuleDepmodMissing, "cannot be read: %v", err)
			continue
		}
		if !resolved {
			continue
		}
		want, err := os.ReadFile(filepath.Join(out.dir, name))
		if err != nil {
			l.add(path.Join(l.imageDir, name), RuleDepmodStale, "cannot be compared: %v", err)
			continue
		}
		if !bytes.Equal(have, want) {
			l.add(path.Join(l.imageDir, name), RuleDepmodStale, "is not what depmod writes for the modules now (%s): %s", difference(name, have, want), hint)
		}
	}
	if len(missing) > 0 && absent < len(depmod.OutputFiles()) {
		l.add(l.imageDir, RuleDepmodMissing, "depmod's %s are missing (modprobe reads them for aliases, symbols and built-in modules); %s", strings.Join(missing, ", "), hint)
	}
	if !resolved {
		l.rep.Notes = append(l.rep.Notes, fmt.Sprintf("depmod's files were not compared: the module directory links %s into the node's module tree, which depmod indexed too; give the kernel's module tree to compare them",
			strings.Join(l.rep.HostLinks, ", ")))
	}
}

// difference says where two versions of a depmod file part.
func difference(name string, have, want []byte) string {
	if !textFiles[name] {
		return fmt.Sprintf("%d bytes, depmod writes %d", len(have), len(want))
	}
	a, b := lineSet(have), lineSet(want)
	var parts []string
	for _, line := range strings.Split(string(have), "\n") {
		if line != "" && !b[line] {
			parts = append(parts, fmt.Sprintf("it has %q, which depmod no longer writes", line))
			break
		}
	}
	for _, line := range strings.Split(string(want), "\n") {
		if line != "" && !a[line] {
			parts = append(parts, fmt.Sprintf("it lacks %q", line))
			break
		}
	}
	if len(parts) == 0 {
		return "the same lines in another order"
	}
	return strings.Join(parts, "; ")
}

// lineSet returns the lines of a text file.
func lineSet(data []byte) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		out[line] = true
	}
	return out
}
