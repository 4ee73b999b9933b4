package depmod

import (
	"github.com/kmmkit/kmmkit/depmod/modfile"

	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/kmmkit/kmmkit/depmod/index"
	"github.com/kmmkit/kmmkit/internal/atomicfile"
)

// output is one file depmod writes.
type output struct {
	name string
	data []byte
	text bool // part of the -n output
}

// OutputFiles lists the files depmod writes, in the order it writes them.
func OutputFiles() []string {
	return []string{"modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
		"modules.symbols", "modules.symbols.bin", "modules.builtin.bin", "modules.builtin.alias.bin", "modules.devname"}
}

// indexAdder adds to an index, checking characters and, with -w,
// duplicates.
type indexAdder struct {
	b    index.Builder
	name string
	warn bool
	seen map[[2]string]bool
	log  *logger
}

func (a *indexAdder) add(key, value string, prio uint32) error {
	if a.warn {
		if a.seen == nil {
			a.seen = map[[2]string]bool{}
		}
		k := [2]string{key, value}
		if a.seen[k] {
			a.log.warnf("duplicate value in %s: %s %s", a.name, key, value)
		}
		a.seen[k] = true
	}
	if err := a.b.Add(key, value, prio); err != nil {
		return fmt.Errorf("Module index %s: %w", a.name, err)
	}
	return nil
}

// buildOutputs computes every output file in memory, the independent ones
// in parallel.
func buildOutputs(mods []*module, syms *symbolTable, dirname string, opts Options, log *logger) ([]output, error) {
	outs := make([]output, len(OutputFiles()))
	// Each producer logs into its own buffer; the buffers are written in
	// kmod's file order afterwards, so messages never depend on timing.
	logs := make([]*logger, 5)
	for i := range logs {
		logs[i] = log.buffered()
	}
	newIndex := func(name string, l *logger) *indexAdder {
		return &indexAdder{name: name, warn: opts.WarnDuplicates, log: l}
	}
	producers := []func() error{
		func() error { return depOutputs(mods, newIndex("modules.dep.bin", logs[0]), outs[0:2]) },
		func() error { return moduleInfoOutputs(mods, newIndex("modules.alias.bin", logs[1]), logs[1], outs) },
		func() error { return symbolOutputs(syms, newIndex("modules.symbols.bin", logs[2]), outs[5:7]) },
		func() (err error) {
			outs[7], err = builtinIndex(dirname, newIndex("modules.builtin.bin", logs[3]), logs[3])
			return err
		},
		func() (err error) {
			outs[8], err = builtinAliasIndex(dirname, newIndex("modules.builtin.alias.bin", logs[4]), logs[4])
			return err
		},
	}
	errs := make([]error, len(producers))
	var wg sync.WaitGroup
	for i, p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p()
		}()
	}
	wg.Wait()
	for _, l := range logs {
		l.flush(log)
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// outPath is how modules.dep names a module: relative to the module
// directory when it is inside it.
func outPath(m *module) string {
	if m.relpath != "" {
		return m.relpath
	}
	return m.path
}

// depOutputs builds modules.dep and modules.dep.bin into out[0:2].
func depOutputs(mods []*module, depBin *indexAdder, out []output) error {
	var dep bytes.Buffer
	dep.Grow(64 * len(mods))
	var cl closureWalker
	for _, m := range mods {
		start := dep.Len()
		dep.WriteString(outPath(m))
		dep.WriteByte(':')
		for _, d := range cl.closure(m, len(mods)) {
			dep.WriteByte(' ')
			dep.WriteString(outPath(d))
		}
		line := dep.Bytes()[start:]
		if err := depBin.add(m.modname, string(line), uint32(m.idx)); err != nil {
			return err
		}
		dep.WriteByte('\n')
	}
	out[0] = output{name: "modules.dep", data: dep.Bytes(), text: true}
	out[1] = output{name: "modules.dep.bin", data: depBin.b.Bytes()}
	return nil
}

// moduleInfoOutputs builds modules.alias, modules.alias.bin,
// modules.softdep and modules.devname into their places in outs.
func moduleInfoOutputs(mods []*module, aliasBin *indexAdder, log *logger, outs []output) error {
	var alias, softdep, devname bytes.Buffer
	alias.WriteString("# Aliases extracted from modules themselves.\n")
	softdep.WriteString("# Soft dependencies extracted from modules themselves.\n")
	for _, m := range mods {
		if m.file == nil {
			continue
		}
		for _, kv := range m.file.Info {
			switch kv.Key {
			case "alias":
				alias.WriteString("alias ")
				alias.WriteString(kv.Value)
				alias.WriteByte(' ')
				alias.WriteString(m.modname)
				alias.WriteByte('\n')
				norm, ok := normalizeAlias(kv.Value)
				if !ok {
					log.warnf("Unmatched bracket in %s", kv.Value)
					continue
				}
				if err := aliasBin.add(norm, m.modname, uint32(m.idx)); err != nil {
					return err
				}
			case "softdep":
				softdep.WriteString("softdep ")
				softdep.WriteString(m.modname)
				softdep.WriteByte(' ')
				softdep.WriteString(kv.Value)
				softdep.WriteByte('\n')
			}
		}
		writeDevname(&devname, m, log)
	}
	outs[2] = output{name: "modules.alias", data: alias.Bytes(), text: true}
	outs[3] = output{name: "modules.alias.bin", data: aliasBin.b.Bytes()}
	outs[4] = output{name: "modules.softdep", data: softdep.Bytes(), text: true}
	outs[9] = output{name: "modules.devname", data: devname.Bytes(), text: true}
	return nil
}

// symbolOutputs builds modules.symbols and modules.symbols.bin into
// out[0:2].
func symbolOutputs(syms *symbolTable, symBin *indexAdder, out []output) error {
	var text bytes.Buffer
	text.WriteString("# Aliases for symbols, used by symbol_request().\n")
	for _, name := range syms.ordered() {
		e := syms.byName[name]
		if e.owner == nil {
			continue
		}
		text.WriteString("alias symbol:")
		text.WriteString(name)
		text.WriteByte(' ')
		text.WriteString(e.owner.modname)
		text.WriteByte('\n')
		if err := symBin.add("symbol:"+name, e.owner.modname, uint32(e.owner.idx)); err != nil {
			return err
		}
	}
	out[0] = output{name: "modules.symbols", data: text.Bytes(), text: true}
	out[1] = output{name: "modules.symbols.bin", data: symBin.b.Bytes()}
	return nil
}

// normalizeAlias turns "-" into "_" outside bracket expressions, as kmod
// does for index keys; false means an unmatched bracket.
func normalizeAlias(v string) (string, bool) {
	const max = 4095
	var b strings.Builder
	for i := 0; i < len(v) && b.Len() < max; i++ {
		switch c := v[i]; c {
		case '-':
			b.WriteByte('_')
		case ']':
			return "", false
		case '[':
			j := strings.IndexByte(v[i:], ']')
			if j < 0 {
				return "", false
			}
			b.WriteString(v[i : i+j+1])
			i += j
		default:
			b.WriteByte(c)
		}
	}
	s := b.String()
	if len(s) > max {
		s = s[:max]
	}
	return s, true
}

// writeDevname writes the modules.devname line of m, if it has one.
func writeDevname(w *bytes.Buffer, m *module, log *logger) {
	var name string
	var typ byte
	var major, minor uint64
	for _, a := range m.file.Values("alias") {
		if strings.HasPrefix(a, "devname:") {
			name = a[len("devname:"):]
		} else if ma, mi, ok := scanMajorMinor(a, "char-major-"); ok {
			typ, major, minor = 'c', ma, mi
		} else if ma, mi, ok := scanMajorMinor(a, "block-major-"); ok {
			typ, major, minor = 'b', ma, mi
		}
		if name != "" && typ != 0 {
			break
		}
	}
	if name == "" {
		return
	}
	if typ == 0 {
		log.errorf("Module '%s' has devname (%s) but lacks major and minor information. Ignoring.", m.modname, name)
		return
	}
	if w.Len() == 0 {
		w.WriteString("# Device nodes to trigger on-demand module loading.\n")
	}
	fmt.Fprintf(w, "%s %s %c%d:%d\n", m.modname, name, typ, major, minor)
}

// scanMajorMinor parses "<prefix>%u-%u" as sscanf does.
func scanMajorMinor(s, prefix string) (uint64, uint64, bool) {
	if !strings.HasPrefix(s, prefix) {
		return 0, 0, false
	}
	s = s[len(prefix):]
	major, rest, ok := scanUint(s)
	if !ok || !strings.HasPrefix(rest, "-") {
		return 0, 0, false
	}
	minor, _, ok := scanUint(rest[1:])
	if !ok {
		return 0, 0, false
	}
	return major, minor, true
}

// scanUint reads a %u conversion: optional spaces, an optional sign, and
// decimal digits, wrapping to 32 bits as scanf does.
func scanUint(s string) (uint64, string, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, s, false
	}
	v, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil {
		v = ^uint64(0)
	}
	v32 := uint32(v)
	if neg {
		v32 = -v32
	}
	return uint64(v32), s[i:], true
}

// builtinIndex builds modules.builtin.bin from modules.builtin; a missing
// input gives an empty (0-byte) file, as in kmod.
func builtinIndex(dirname string, idx *indexAdder, log *logger) (output, error) {
	data, err := os.ReadFile(dirname + "/modules.builtin")
	if err != nil {
		log.warnf("could not open modules.builtin at %s: %v", dirname, unwrapPathError(err))
		return output{name: "modules.builtin.bin"}, nil
	}
	for _, line := range fgetsLines(data, 4096) {
		if c := line[0]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			log.errorf("Invalid modules.builtin line: %s", line)
			continue
		}
		name := line[strings.LastIndexByte(line, '/')+1:]
		if err := idx.add(modfile.ModuleName(name), "", 0); err != nil {
			return output{}, err
		}
	}
	return output{name: "modules.builtin.bin", data: idx.b.Bytes()}, nil
}

// builtinAliasIndex builds modules.builtin.alias.bin from the
// "modname.key=value\0" records of modules.builtin.modinfo.
func builtinAliasIndex(dirname string, idx *indexAdder, log *logger) (output, error) {
	data, err := os.ReadFile(dirname + "/modules.builtin.modinfo")
	if err != nil {
		log.warnf("could not open modules.builtin.modinfo at %s: %v", dirname, unwrapPathError(err))
		return output{name: "modules.builtin.alias.bin"}, nil
	}
	p := &fieldReader{data: data, log: log}
	for !p.eof() {
		modname, t := p.field('.')
		if t != '.' || modname == "" {
			continue
		}
		key, t := p.field('=')
		if key != "alias" || t != '=' {
			p.skipRecord()
			continue
		}
		value, _ := p.field(0)
		if value == "" {
			continue
		}
		norm, ok := normalizeAlias(value)
		if !ok {
			log.warnf("Unmatched bracket in %s", value)
			continue
		}
		if err := idx.add(norm, modname, 0); err != nil {
			return output{}, err
		}
	}
	return output{name: "modules.builtin.alias.bin", data: idx.b.Bytes()}, nil
}

// fieldReader reads the NUL-separated records of modules.builtin.modinfo.
type fieldReader struct {
	data []byte
	pos  int
	log  *logger
}

func (r *fieldReader) eof() bool { return r.pos >= len(r.data) }

// field reads up to delim, a NUL or the end, consuming the terminator,
// which it returns (-1 at the end). A field is cut at 4095 bytes; the rest
// stays for the next read.
func (r *fieldReader) field(delim byte) (string, int) {
	const max = 4095
	start := r.pos
	for r.pos < len(r.data) {
		c := r.data[r.pos]
		if c == delim || c == 0 {
			r.pos++
			return string(r.data[start : r.pos-1]), int(c)
		}
		if r.pos-start == max {
			r.log.warnf("field too long in modules.builtin.modinfo: %.40s...", r.data[start:r.pos])
			return string(r.data[start:r.pos]), -2
		}
		r.pos++
	}
	return string(r.data[start:r.pos]), -1
}

// skipRecord skips past the next NUL.
func (r *fieldReader) skipRecord() {
	for r.pos < len(r.data) {
		r.pos++
		if r.data[r.pos-1] == 0 {
			return
		}
	}
}

// writeOutputs replaces the files in dir as one set: all are written to
// temporaries first, so a failure there (a full disk) replaces none; then
// they are renamed, and a failed rename puts back the ones already
// renamed (see atomicfile.WriteFiles).
func writeOutputs(dir string, outs []output, create bool) error {
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	files := make([]atomicfile.File, len(outs))
	for i, o := range outs {
		files[i] = atomicfile.File{Name: o.name, Data: o.data, Perm: 0o644}
	}
	return atomicfile.WriteFiles(dir, files)
}
