package lint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/loader/node"
)

// maxWalkEntries bounds how many directory entries one search for
// modules visits.
const maxWalkEntries = 200_000

// Tree lints the unpacked image at root (the directory that holds
// <dirName>/lib/modules/<kernel>) for kernel. Findings are in the Report;
// an error says the tree, or a reference given by an option, cannot be
// read at all.
func Tree(ctx context.Context, root, kernel string, opts ...Option) (*Report, error) {
	c, err := newConfig(kernel, opts)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
	return lintTree(ctx, root, kernel, c, nil)
}

// linter lints one tree.
type linter struct {
	root, kernel string
	cfg          *config
	rep          *Report
	// dir is the module directory on disk; imageDir its image path.
	dir, imageDir string
	// host is the kernel's own module directory (WithKernelTree), and
	// hostMods its modules by name.
	host     string
	hostMods map[string]string
	// files are the module files read, by path; byName their names.
	files  []*moduleFile
	byName map[string][]*moduleFile
	// skippedLinks are the absolute links an extraction left out.
	skippedLinks []string
}

// moduleFile is one module read.
type moduleFile struct {
	info    Module
	disk    string
	file    *modfile.File
	flags   string
	release string
}

// lintTree runs every rule. skipped are the image paths of absolute
// links an extraction left out (Image), which may be links to the host.
func lintTree(ctx context.Context, root, kernel string, c *config, skipped []string) (*Report, error) {
	l := &linter{root: root, kernel: kernel, cfg: c, byName: map[string][]*moduleFile{}, skippedLinks: skipped}
	l.imageDir = c.moduleDir(kernel)
	l.dir = filepath.Join(root, filepath.FromSlash(l.imageDir))
	l.rep = &Report{Kernel: kernel, Source: root, ModuleDir: l.imageDir, Modules: []Module{}, Findings: []Finding{}}
	if err := l.openKernelTree(); err != nil {
		return nil, err
	}
	if err := l.readModules(); err != nil {
		return nil, err
	}
	if len(l.files) == 0 {
		l.misplaced()
		l.sort()
		return l.rep, nil
	}
	l.checkVermagic()
	out, err := l.depmod(ctx)
	if err != nil {
		return nil, err
	}
	if out != nil {
		defer os.RemoveAll(out.tmp)
	}
	l.checkDependencies(out)
	l.checkModules(out)
	l.checkFirmware()
	l.checkSignatures()
	l.sort()
	return l.rep, nil
}

// add records a finding.
func (l *linter) add(file string, rule Rule, format string, args ...any) {
	l.rep.Findings = append(l.rep.Findings, Finding{File: file, Rule: rule, Message: fmt.Sprintf(format, args...)})
}

// imagePath turns a path under root into an image path.
func (l *linter) imagePath(p string) string {
	rel, err := filepath.Rel(l.root, p)
	if err != nil {
		return p
	}
	return "/" + filepath.ToSlash(rel)
}

func (l *linter) sort() {
	sort.SliceStable(l.rep.Findings, func(i, j int) bool { return l.rep.Findings[i].File < l.rep.Findings[j].File })
}

// openKernelTree finds the kernel's own module directory and the
// reference vermagic.
func (l *linter) openKernelTree() error {
	if l.cfg.vermagic != "" {
		l.rep.Vermagic = l.cfg.vermagic
	}
	if l.cfg.kernelTree == "" {
		return nil
	}
	dir := l.cfg.kernelTree
	if st, err := os.Stat(filepath.Join(dir, "lib", "modules", l.kernel)); err == nil && st.IsDir() {
		dir = filepath.Join(dir, "lib", "modules", l.kernel)
	}
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("kernel tree: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("kernel tree %s is not a directory", dir)
	}
	if l.rep.Vermagic == "" {
		vm, err := node.InTreeVermagic(dir, l.kernel)
		if err != nil {
			return fmt.Errorf("kernel tree %s: %w", dir, err)
		}
		l.rep.Vermagic = vm
	}
	l.host, l.hostMods = dir, map[string]string{}
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > maxWalkEntries {
			return fmt.Errorf("more than %d entries", maxWalkEntries)
		}
		if d.IsDir() && p != dir && (d.Name() == "build" || d.Name() == "source") {
			return fs.SkipDir
		}
		if !d.IsDir() && isModuleFile(d.Name()) {
			l.hostMods[modfile.ModuleName(d.Name())] = p
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kernel tree %s: %w", dir, err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(data)) {
			if _, ok := l.hostMods[modfile.ModuleName(path.Base(line))]; !ok {
				l.hostMods[modfile.ModuleName(path.Base(line))] = ""
			}
		}
	}
	return nil
}

// isModuleFile tells a module file by its name, as depmod does.
func isModuleFile(name string) bool {
	for _, e := range depmod.DefaultExtensions() {
		if len(name) > len(e) && strings.HasSuffix(name, e) {
			return true
		}
	}
	return false
}

// hostLink reports whether the entry at p (a symbolic link of the module
// directory) leads into the node's own module tree: an absolute link,
// which the node resolves (KMM's documented "host" link to
// /lib/modules/<kernel>).
func (l *linter) hostLink(p string) bool {
	to, err := os.Readlink(p)
	return err == nil && path.IsAbs(to)
}

// readModules reads every module under the module directory.
func (l *linter) readModules() error {
	for _, s := range l.skippedLinks {
		s = path.Clean("/" + strings.TrimPrefix(s, "./"))
		if path.Dir(s) == l.imageDir && s != path.Join(l.imageDir, "build") && s != path.Join(l.imageDir, "source") {
			l.rep.HostLinks = append(l.rep.HostLinks, s)
		}
	}
	st, err := os.Stat(l.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !st.IsDir():
		l.add(l.imageDir, RuleLayout, "is not a directory")
		return nil
	}
	dec, err := modfile.NewDecompressor()
	if err != nil {
		return err
	}
	defer dec.Close()
	n := 0
	err = filepath.WalkDir(l.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > maxWalkEntries {
			return fmt.Errorf("%s: more than %d entries", l.imageDir, maxWalkEntries)
		}
		name := d.Name()
		if p == l.dir {
			return nil
		}
		if filepath.Dir(p) == l.dir && (name == "build" || name == "source") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if filepath.Dir(p) == l.dir && l.hostLink(p) {
				l.rep.HostLinks = append(l.rep.HostLinks, l.imagePath(p))
				return nil
			}
			if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
				return nil
			}
		} else if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		if !isModuleFile(name) {
			return nil
		}
		l.readModule(dec, p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading %s: %w", l.imageDir, err)
	}
	slices.Sort(l.rep.HostLinks)
	l.rep.HostLinks = slices.Compact(l.rep.HostLinks)
	for name, fs := range l.byName {
		if len(fs) > 1 {
			paths := make([]string, len(fs))
			for i, f := range fs {
				paths[i] = f.info.Path
			}
			l.add(fs[1].info.Path, RuleLayout, "module %s has %d files (%s): modprobe loads only the one modules.dep names; keep one",
				name, len(fs), strings.Join(paths, ", "))
		}
	}
	return nil
}

// readModule reads one module file.
func (l *linter) readModule(dec *modfile.Decompressor, p string) {
	ip := l.imagePath(p)
	elf, _, err := dec.ReadFile(p)
	var f *modfile.File
	if err == nil {
		f, err = modfile.Parse(elf)
	}
	if err != nil {
		l.add(ip, RuleUnreadable, "cannot be read as a kernel module: %v", err)
		return
	}
	m := &moduleFile{disk: p, file: f, info: Module{Name: modfile.ModuleName(filepath.Base(p)), Path: ip}}
	if vm := f.Values("vermagic"); len(vm) > 0 {
		m.info.Vermagic = vm[0]
	}
	m.release, m.flags = node.SplitVermagic(m.info.Vermagic)
	for _, d := range f.Values("depends") {
		for _, n := range strings.Split(d, ",") {
			if n = strings.TrimSpace(n); n != "" {
				m.info.Depends = append(m.info.Depends, node.NormalizeName(n))
			}
		}
	}
	m.info.Firmware = f.Values("firmware")
	if sig, err := signfile.ParseSignature(elf); err == nil {
		m.info.Signature = sig
	} else if !errors.Is(err, signfile.ErrNotSigned) && l.cfg.signed {
		l.add(ip, RuleSignature, "the signature cannot be read: %v", err)
	}
	l.files = append(l.files, m)
	l.byName[m.info.Name] = append(l.byName[m.info.Name], m)
	l.rep.Modules = append(l.rep.Modules, m.info)
}

// misplaced reports an empty module directory, and where the image keeps
// its modules instead.
func (l *linter) misplaced() {
	where := map[string]int{}
	for _, d := range l.cfg.searchDirs() {
		base := filepath.Join(l.root, filepath.FromSlash(d))
		n := 0
		_ = filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if n++; n > maxWalkEntries {
				return fs.SkipAll
			}
			if !e.IsDir() && isModuleFile(e.Name()) {
				where[l.treeOf(p)]++
			}
			return nil
		})
	}
	msg := "holds no kernel module"
	if _, err := os.Stat(l.dir); errors.Is(err, fs.ErrNotExist) {
		msg = "does not exist"
	}
	if len(where) == 0 {
		l.add(l.imageDir, RuleLayout, "%s, and the image has no module under %s: the worker finds nothing to load",
			msg, strings.Join(l.cfg.searchDirs(), ", "))
		return
	}
	dirs := make([]string, 0, len(where))
	for d := range where {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	var hints []string
	for _, d := range dirs {
		h := fmt.Sprintf("%d under %s", where[d], d)
		if k, ok := strings.CutPrefix(d, path.Join(l.cfg.dirName, "lib", "modules")+"/"); ok && !strings.Contains(k, "/") {
			h += fmt.Sprintf(" (a directory for kernel %s: is the image built for %s? check the kernel mapping)", k, l.kernel)
		} else if pre, ok := strings.CutSuffix(d, "/lib/modules/"+l.kernel); ok {
			if pre == "" {
				pre = "/"
			}
			h += fmt.Sprintf(" (another prefix: set modprobe.dirName to %s, or move them to %s)", pre, l.imageDir)
		} else {
			h += fmt.Sprintf(" (move them to %s)", l.imageDir)
		}
		hints = append(hints, h)
	}
	l.add(l.imageDir, RuleLayout, "%s; the image has its modules elsewhere: %s", msg, strings.Join(hints, "; "))
}

// treeOf names the module tree a misplaced module lies in: its
// .../lib/modules/<kernel>, or its directory.
func (l *linter) treeOf(p string) string {
	ip := l.imagePath(p)
	if i := strings.Index(ip, "/lib/modules/"); i >= 0 {
		rest := ip[i+len("/lib/modules/"):]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return ip[:i+len("/lib/modules/")+j]
		}
	}
	return path.Dir(ip)
}

// checkVermagic checks every module's release, and its flags against the
// reference or the other modules.
func (l *linter) checkVermagic() {
	var sameRelease []*moduleFile
	for _, m := range l.files {
		switch {
		case m.info.Vermagic == "":
			l.add(m.info.Path, RuleVermagicRelease, "has no vermagic: the kernel refuses it")
		case m.release != l.kernel:
			l.add(m.info.Path, RuleVermagicRelease, "built for kernel %s (vermagic %q) but lies under %s: the kernel %s refuses it; build it for %s, or use the image of %s for that kernel",
				m.release, m.info.Vermagic, l.imageDir, l.kernel, l.kernel, m.release)
		default:
			sameRelease = append(sameRelease, m)
		}
	}
	if ref := l.rep.Vermagic; ref != "" {
		for _, m := range sameRelease {
			if d := node.VermagicFlagDiff(m.info.Vermagic, ref); d != "" {
				l.add(m.info.Path, RuleVermagicFlags, "vermagic %q, the kernel's %q: same release, other flags (%s): it was built with another kernel configuration; build it against the headers of %s",
					m.info.Vermagic, ref, d, l.kernel)
			}
		}
		return
	}
	// No reference: the most common flags stand for the kernel's.
	count := map[string]int{}
	for _, m := range sameRelease {
		count[m.flags]++
	}
	if len(count) < 2 {
		if len(sameRelease) > 0 {
			l.rep.Notes = append(l.rep.Notes, "vermagic flags compared among the image's modules only: give the kernel's vermagic or its module tree to check them against the kernel")
		}
		return
	}
	common := sameRelease[0].flags
	for f, n := range count {
		if n > count[common] || (n == count[common] && f < common) {
			common = f
		}
	}
	for _, m := range sameRelease {
		if m.flags != common {
			l.add(m.info.Path, RuleVermagicFlags, "vermagic %q: its flags differ from those of %d other module(s) of the image (%q): %s; the modules were built with different kernel configurations, so the kernel refuses some of them",
				m.info.Vermagic, count[common], l.kernel+common, node.VermagicFlagDiff(m.info.Vermagic, l.kernel+common))
		}
	}
}
