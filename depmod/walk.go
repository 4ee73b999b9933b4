package depmod

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// maxWalkDepth bounds recursion through symlinked directories, which kmod
// follows until the path gets too long.
const maxWalkDepth = 64

// candidate is a module file found by the walk.
type candidate struct {
	path       string // as depmod prints it for modules outside dirname
	relpath    string // relative to dirname; "" for modules outside it
	uncrelpath string // relpath with the name cut after modname+".ko"
	modname    string
	modnameLen int // the modname's length in the file name
}

// isModuleFile reports whether a file name ends in a module extension and
// is longer than it.
func isModuleFile(name string, exts []string) bool {
	for _, e := range exts {
		if len(name) > len(e) && strings.HasSuffix(name, e) {
			return true
		}
	}
	return false
}

// finder walks the module directories and keeps one module per name.
type finder struct {
	dirname string
	cfg     *config
	exts    []string
	log     *logger
	byName  map[string]*candidate
}

// newCandidate describes the module file at path.
func (f *finder) newCandidate(path string) *candidate {
	base := filepath.Base(path)
	c := &candidate{path: path, modname: modfile.ModuleName(base)}
	c.modnameLen = len(c.modname)
	if strings.HasPrefix(path, f.dirname+"/") {
		c.relpath = path[len(f.dirname)+1:]
		dir := c.relpath[:len(c.relpath)-len(base)]
		end := min(c.modnameLen+3, len(base))
		c.uncrelpath = dir + base[:end]
	}
	return c
}

// walk visits dir (a path as depmod builds it, by appending) in readdir
// order.
func (f *finder) walk(dir string, depth int) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if name == "." || name == ".." || name == "build" || name == "source" || f.cfg.excludes[name] {
			continue
		}
		path := dir + "/" + name
		typ := e.Type()
		if !typ.IsRegular() && !typ.IsDir() {
			st, err := os.Stat(path)
			if err != nil {
				f.log.errorf("fstatat(%s): %v", path, err)
				continue
			}
			typ = st.Mode().Type()
		}
		switch {
		case typ.IsDir():
			if depth >= maxWalkDepth {
				f.log.errorf("%s: directories nested more than %d levels deep (a symlink loop?); skipping", path, maxWalkDepth)
				continue
			}
			if err := f.walk(path, depth+1); err != nil {
				f.log.errorf("could not open directory %s: %v", path, err)
			}
		case typ.IsRegular():
			if isModuleFile(name, f.exts) {
				f.add(f.newCandidate(path))
			}
		default:
			f.log.errorf("unsupported file type %s: %v", path, typ&fs.ModeType)
		}
	}
	return nil
}

// add keeps c unless a module of the same name has priority over it.
func (f *finder) add(c *candidate) {
	old, ok := f.byName[c.modname]
	if ok {
		if f.higherPriority(old, c) {
			f.log.debugf("Ignored lower priority: %s, higher: %s", c.path, old.path)
			return
		}
		f.log.debugf("Replace lower priority %s with new module %s", old.path, c.path)
	}
	f.byName[c.modname] = c
}

// higherPriority reports whether old is kept over new (kmod's
// depmod_module_is_higher_priority, §3.3 of the reference).
func (f *finder) higherPriority(old, new *candidate) bool {
	lenTo := func(c *candidate) int { return strings.LastIndexByte(c.path, '/') + 1 + c.modnameLen }
	newL, oldL := lenTo(new), lenTo(old)
	type rel struct {
		s  string
		l  int
		ok bool
	}
	relOf := func(c *candidate, l int) rel {
		if strings.HasPrefix(c.path, f.dirname) && len(c.path) > len(f.dirname) {
			return rel{s: c.path[len(f.dirname)+1:], l: l - len(f.dirname) - 1, ok: true}
		}
		return rel{}
	}
	rn, ro := relOf(new, newL), relOf(old, oldL)

	for _, o := range f.cfg.overrides {
		if rn.ok && rn.l == len(o) && strings.HasPrefix(rn.s, o) {
			return false
		}
		if ro.ok && ro.l == len(o) && strings.HasPrefix(ro.s, o) {
			return true
		}
	}

	under := func(r rel, s string) bool {
		return r.ok && r.l > len(s) && r.s[len(s)] == '/' && strings.HasPrefix(r.s, s)
	}
	newprio, oldprio, bprio := -1, -1, -1
	i := 0
	for _, se := range f.cfg.searches {
		switch {
		case se.builtin:
			bprio = i
		case se.external:
			for _, e := range f.cfg.externals {
				if newL > len(e) && new.path[len(e)] == '/' && strings.HasPrefix(new.path, e) {
					newprio = i
				}
				if oldL > len(e) && old.path[len(e)] == '/' && strings.HasPrefix(old.path, e) {
					oldprio = i
				}
				i++
			}
		default:
			if under(rn, se.path) {
				newprio = i
			} else if under(ro, se.path) {
				oldprio = i
			}
		}
		i++
	}
	if newprio < 0 {
		newprio = bprio
	}
	if oldprio < 0 {
		oldprio = bprio
	}
	return newprio <= oldprio
}
