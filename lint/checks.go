package lint

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kmmkit/kmmkit/depmod/index"
	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/loader/node"
)

// export is a symbol a module exports, with its version.
type export struct {
	module string
	crc    uint64
}

// checkDependencies checks that every module a module declares it needs
// is in the image or comes from the host, and that the versions of the
// symbols it uses match their exporters'.
func (l *linter) checkDependencies(out *depmodOut) {
	exports := map[string]export{}
	addExports := func(name string, f *modfile.File) {
		for _, s := range f.Exports {
			if _, ok := exports[s.Name]; !ok {
				exports[s.Name] = export{module: name, crc: s.CRC}
			}
		}
	}
	for _, m := range l.files {
		addExports(m.info.Name, m.file)
	}
	unverified := false
	hostRead := map[string]bool{}
	for _, m := range l.files {
		for _, d := range m.info.Depends {
			viaDepmod := out != nil && slices.Contains(out.deps[m.info.Name], d)
			switch {
			case len(l.byName[d]) > 0:
				if out != nil && !viaDepmod {
					l.add(m.info.Path, RuleDependency, "declares that it needs %s (.modinfo depends), but depmod finds no symbol of the image's %s that it uses: the two were built from different sources, and the kernel refuses %s (unknown symbol)",
						d, d, m.info.Name)
				}
				continue
			case viaDepmod:
				// Through a link into the host's tree.
			case slices.Contains(l.cfg.hostModules, d):
				if l.hostMods != nil {
					if _, ok := l.hostMods[d]; !ok {
						l.add(m.info.Path, RuleDependency, "needs %s, declared to come from the node, but the kernel tree %s has no module %s", d, l.host, d)
						continue
					}
				}
			case len(l.rep.HostLinks) > 0 && l.host == "":
				unverified = true
				continue
			default:
				hint := fmt.Sprintf("add it to the image, link the node's module tree into %s before depmod (ln -s /lib/modules/%s %s/host, as KMM documents), or declare that the node loads it first (a host module)",
					l.imageDir, l.kernel, l.imageDir)
				if p, ok := l.hostMods[d]; ok && p != "" {
					hint = fmt.Sprintf("it is an in-tree module of %s: link the node's module tree into %s before depmod (ln -s /lib/modules/%s %s/host, as KMM documents), or declare that the node loads it first (a host module)",
						l.kernel, l.imageDir, l.kernel, l.imageDir)
				}
				l.add(m.info.Path, RuleDependency, "needs module %s (.modinfo depends), which the image does not hold: %s", d, hint)
				continue
			}
			// From the host: its exports count when the tree is known.
			if p := l.hostMods[d]; p != "" && !hostRead[d] {
				hostRead[d] = true
				if f, err := l.parseHost(p); err == nil {
					addExports(d, f)
				}
			}
		}
	}
	if unverified {
		l.rep.Notes = append(l.rep.Notes, "dependencies on the node's own modules were not checked: give the kernel's module tree")
	}
	for _, m := range l.files {
		for _, s := range m.file.Needs {
			e, ok := exports[s.Name]
			if !ok || s.CRC == 0 || e.crc == 0 || e.crc == s.CRC || e.module == m.info.Name {
				continue
			}
			l.add(m.info.Path, RuleDependency, "uses symbol %s with version 0x%08x, but %s exports it with 0x%08x: the kernel refuses %s (disagrees about version of symbol %s); build both against the same sources and kernel",
				s.Name, s.CRC, e.module, e.crc, m.info.Name, s.Name)
		}
	}
}

// parseHost reads a module of the kernel tree.
func (l *linter) parseHost(p string) (*modfile.File, error) {
	dec, err := modfile.NewDecompressor()
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	return modfile.NewParser(dec).ParseFile(p)
}

// checkModules checks that the modules the Module loads are in the image.
func (l *linter) checkModules(out *depmodOut) {
	var alias *index.Reader
	if out != nil {
		alias, _ = index.Open(filepath.Join(out.dir, "modules.alias.bin"))
	}
	for _, want := range l.cfg.modules {
		n := node.NormalizeName(want)
		if len(l.byName[n]) > 0 {
			continue
		}
		if out != nil && out.paths[n] != "" {
			continue // a module of the host tree the image links to
		}
		if alias != nil {
			if vals, err := alias.Match(n); err == nil && len(vals) > 0 {
				continue
			}
		}
		names := make([]string, 0, len(l.byName))
		for name := range l.byName {
			names = append(names, name)
		}
		slices.Sort(names)
		l.add(l.imageDir, RuleModuleMissing, "the Module loads %s, which is neither a module of the image nor an alias of one (the image has %s)", want, strings.Join(names, ", "))
	}
}

// checkFirmware checks that the firmware modules declare is under the
// firmware path.
func (l *linter) checkFirmware() {
	if l.cfg.firmwarePath == "" {
		for _, m := range l.files {
			if len(m.info.Firmware) > 0 {
				l.rep.Notes = append(l.rep.Notes, "firmware not checked: no firmware path given (modprobe.firmwarePath)")
				return
			}
		}
		return
	}
	for _, m := range l.files {
		for _, fw := range m.info.Firmware {
			clean := path.Clean("/" + fw)
			at := path.Join(l.cfg.firmwarePath, clean)
			if strings.Contains(fw, "..") || fw == "" {
				l.add(m.info.Path, RuleFirmwareMissing, "declares firmware %q, a name the kernel's firmware loader refuses", fw)
				continue
			}
			st, err := os.Stat(filepath.Join(l.root, filepath.FromSlash(at)))
			if err == nil && st.Mode().IsRegular() {
				continue
			}
			l.add(m.info.Path, RuleFirmwareMissing, "declares firmware %s (MODULE_FIRMWARE), which is not in the image at %s: the driver cannot load it on the node; add it under %s",
				fw, at, l.cfg.firmwarePath)
		}
	}
}

// checkSignatures checks that modules are signed, by the keys asked for.
func (l *linter) checkSignatures() {
	if !l.cfg.signed {
		return
	}
	for _, m := range l.files {
		sig := m.info.Signature
		switch {
		case sig == nil && l.hasFinding(m.info.Path, RuleSignature):
		case sig == nil:
			l.add(m.info.Path, RuleUnsigned, "is not signed: a kernel that enforces module signatures (Secure Boot, module.sig_enforce=1) refuses it; sign it (the Module's sign section, or kmm sign-file)")
		case len(l.cfg.keyIDs) > 0 && !slices.Contains(l.cfg.keyIDs, normalizeKeyID(sig.KeyID)):
			l.add(m.info.Path, RuleSignature, "is signed by key %s (signer %q), not by one of the keys asked for: the node refuses it unless it trusts that key", sig.KeyID, sig.Signer)
		}
	}
}

// hasFinding reports whether file already has a finding of rule.
func (l *linter) hasFinding(file string, rule Rule) bool {
	for _, f := range l.rep.Findings {
		if f.File == file && f.Rule == rule {
			return true
		}
	}
	return false
}
