package depmod

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// symbolEntry is the owner of a symbol: a module, or the kernel (nil).
type symbolEntry struct {
	owner *module
	crc   uint64
}

// symbolTable maps symbol names to their owners; the last module to export
// a name owns it.
type symbolTable struct {
	byName map[string]*symbolEntry
	// haveCRCs is set when Module.symvers gave the kernel's CRCs.
	haveCRCs bool
}

func (t *symbolTable) add(name string, owner *module, crc uint64) {
	t.byName[name] = &symbolEntry{owner: owner, crc: crc}
}

// lookup finds a needed symbol as kmod does: one leading "." dropped, then
// one leading prefix character.
func (t *symbolTable) lookup(name string, prefix byte) *symbolEntry {
	name = strings.TrimPrefix(name, ".")
	return t.byName[stripPrefix(name, prefix)]
}

// stripPrefix removes one leading prefix character.
func stripPrefix(name string, prefix byte) string {
	if prefix != 0 && len(name) > 0 && name[0] == prefix {
		return name[1:]
	}
	return name
}

// ordered returns the symbol names in kmod's hash table order: bucket
// (hash & 2047), then strcmp.
func (t *symbolTable) ordered() []string {
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		bi, bj := hashKey(names[i])&2047, hashKey(names[j])&2047
		if bi != bj {
			return bi < bj
		}
		return names[i] < names[j]
	})
	return names
}

// newSymbolTable starts the table with the kernel's symbols from
// Module.symvers or System.map.
func newSymbolTable(opts Options, log *logger) (*symbolTable, error) {
	t := &symbolTable{byName: map[string]*symbolEntry{}}
	switch {
	case opts.Symvers != "":
		if err := t.loadSymvers(opts.Symvers, opts.SymbolPrefix, log); err != nil {
			return nil, err
		}
		t.haveCRCs = true
	case opts.SystemMap != "":
		if err := t.loadSystemMap(opts.SystemMap, opts.SymbolPrefix, log); err != nil {
			return nil, err
		}
	default:
		return t, nil
	}
	t.add("__this_module", nil, 0)
	t.add("_GLOBAL_OFFSET_TABLE_", nil, 0)
	if _, ok := t.byName["TOC."]; !ok {
		t.add("TOC.", nil, 0)
	}
	return t, nil
}

// loadSymvers reads the vmlinux lines of a Module.symvers file.
func (t *symbolTable) loadSymvers(path string, prefix byte, log *logger) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("could not open symvers %s: %w", path, unwrapPathError(err))
	}
	for i, line := range fgetsLines(data, 10240) {
		tok := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
		if len(tok) < 3 || tok[2] != "vmlinux" {
			continue
		}
		crc, ok := parseHex(tok[0])
		if !ok {
			log.errorf("%s:%d Invalid symbol version %s", path, i+1, tok[0])
			continue
		}
		t.add(stripPrefix(tok[1], prefix), nil, crc)
	}
	return nil
}

// parseHex parses a number as strtoull(s, &end, 16) does, requiring the
// whole string to be consumed.
func parseHex(s string) (uint64, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		s = s[2:]
	}
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil
}

// loadSystemMap reads the __ksymtab_ symbols of a System.map file.
func (t *symbolTable) loadSystemMap(path string, prefix byte, log *logger) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("could not open filesyms %s: %w", path, unwrapPathError(err))
	}
	const ksymstr = "__ksymtab_"
	for i, line := range fgetsLines(data, 10240) {
		first := strings.IndexByte(line, ' ')
		second := -1
		if first >= 0 {
			if j := strings.IndexByte(line[first+1:], ' '); j >= 0 {
				second = first + 1 + j
			}
		}
		if second < 0 {
			log.errorf("%s:%d: invalid line: %s", path, i+1, line)
			continue
		}
		name := stripPrefix(line[second+1:], prefix)
		if !strings.HasPrefix(name, ksymstr) {
			continue
		}
		name = strings.TrimSuffix(name[len(ksymstr):], "\n")
		t.add(name, nil, 0)
	}
	return nil
}
