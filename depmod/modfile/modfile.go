package modfile

import (
	"bytes"
	"strings"
)

// KV is one .modinfo entry, key=value.
type KV struct {
	Key, Value string
}

// Symbol is an exported or needed symbol.
type Symbol struct {
	Name string
	// CRC is the symbol version: from __kcrctab for exports, from
	// __versions for needed symbols; 0 when unknown.
	CRC uint64
	// Weak is set for a needed symbol bound weakly.
	Weak bool
}

// File is what depmod uses of one module.
type File struct {
	// Info is the .modinfo section in order.
	Info []KV
	// HasModinfo tells whether the file has a .modinfo section at all.
	HasModinfo bool
	// Exports are the symbols the module exports.
	Exports []Symbol
	// Needs are the symbols the module uses from others, in .symtab order,
	// followed by the __versions entries no symbol used.
	Needs []Symbol
}

// Values returns the values of every .modinfo entry with the key, in order.
func (f *File) Values(key string) []string {
	var out []string
	for _, kv := range f.Info {
		if kv.Key == key {
			out = append(out, kv.Value)
		}
	}
	return out
}

// Parse reads an uncompressed module. It fails only when the ELF header
// or section table is unusable; a module with no .modinfo, no symbols or a
// damaged symbol table is returned with those parts empty, as kmod reads
// it.
func Parse(data []byte) (*File, error) {
	return parse(data, nil, nil, nil)
}

// parse reads a module whose bytes are in data, or are loaded into data by
// fill, interning strings through intern when it is not nil.
func parse(data []byte, fill func(off, size uint64) error, in *interner, keep func(key string) bool) (*File, error) {
	f, err := parseELF(data, fill)
	if err != nil {
		return nil, err
	}
	f.intern = in
	m := &File{}
	if info, _, ok := f.section(".modinfo"); ok {
		m.HasModinfo = true
		m.Info = parseInfo(info, keep)
	}
	m.Exports = f.exports()
	m.Needs = f.needs()
	return m, nil
}

// ParseInfo reads only the .modinfo section.
func ParseInfo(data []byte) ([]KV, error) {
	f, err := parseELF(data, nil)
	if err != nil {
		return nil, err
	}
	info, _, ok := f.section(".modinfo")
	if !ok {
		return nil, nil
	}
	return parseInfo(info, nil), nil
}

// parseInfo splits a .modinfo section into entries, keeping those whose
// key keep accepts (all when keep is nil).
func parseInfo(info []byte, keep func(string) bool) []KV {
	var out []KV
	eachString(info, func(entry []byte) {
		k, v, _ := bytes.Cut(entry, []byte("="))
		if keep == nil || keep(string(k)) {
			out = append(out, KV{Key: string(k), Value: string(v)})
		}
	})
	return out
}

// exports lists the exported symbols: the __crc_ symbols of .symtab, or
// else the strings of __ksymtab_strings.
func (f *elfFile) exports() []Symbol {
	if out, ok := f.crcExports(); ok && len(out) > 0 {
		return out
	}
	strs, _, ok := f.section("__ksymtab_strings")
	if !ok {
		return nil
	}
	var out []Symbol
	for _, s := range splitStrings(strs) {
		out = append(out, Symbol{Name: s})
	}
	return out
}

// crcExports reads the __crc_ symbols; false means the symbol table is
// unusable and the fallback applies.
func (f *elfFile) crcExports() ([]Symbol, bool) {
	syms, strtab, entsize, ok := f.symtab()
	if !ok {
		return nil, false
	}
	n := len(syms) / entsize
	var out []Symbol
	for i := 1; i < n; i++ {
		s := f.symbolAt(syms, entsize, i)
		if uint64(s.name) >= uint64(len(strtab)) {
			return nil, false
		}
		raw := strtab[s.name:]
		if len(raw) < 6 || string(raw[:6]) != "__crc_" {
			continue
		}
		out = append(out, Symbol{Name: f.str(raw[6:]), CRC: f.crc(s)})
	}
	return out, true
}

// crc reads the CRC a __crc_ symbol points to.
func (f *elfFile) crc(s symbol) uint64 {
	const shnAbs = 0xfff1
	if s.shndx == 0 || s.shndx == shnAbs {
		return s.value
	}
	if int(s.shndx) >= f.shnum {
		return ^uint64(0)
	}
	off, size := f.sectionBounds(int(s.shndx))
	if size < 4 || s.value > size-4 || off > uint64(len(f.data)) || off+s.value > uint64(len(f.data))-4 {
		return ^uint64(0)
	}
	if f.load(off+s.value, 4) != nil {
		return ^uint64(0)
	}
	return uint64(f.order.Uint32(f.data[off+s.value:]))
}

// needs lists the undefined symbols with their __versions CRCs, then the
// unused __versions entries.
func (f *elfFile) needs() []Symbol {
	type version struct {
		name string
		crc  uint64
		used bool
	}
	var versions []version
	if vs, _, ok := f.section("__versions"); ok && len(vs)%64 == 0 {
		crcSize := 4
		if f.is64 {
			crcSize = 8
		}
		for off := 0; off < len(vs); off += 64 {
			e := vs[off : off+64]
			var crc uint64
			if f.is64 {
				crc = f.order.Uint64(e)
			} else {
				crc = uint64(f.order.Uint32(e))
			}
			name := e[crcSize:]
			if j := indexNUL(name); j >= 0 {
				name = name[:j]
			}
			versions = append(versions, version{name: f.str(name), crc: crc})
		}
	}
	syms, strtab, entsize, ok := f.symtab()
	if !ok {
		return nil
	}
	var byName map[string]int
	if len(versions) > 8 {
		byName = make(map[string]int, len(versions))
		for j := len(versions) - 1; j >= 0; j-- {
			byName[versions[j].name] = j
		}
	}
	sparc := f.machine == emSPARC || f.machine == emSPARCV9
	n := len(syms) / entsize
	undef := 0
	for i := 1; i < n; i++ {
		if f.symbolAt(syms, entsize, i).shndx == 0 {
			undef++
		}
	}
	out := make([]Symbol, 0, undef+len(versions))
	for i := 1; i < n; i++ {
		s := f.symbolAt(syms, entsize, i)
		if s.shndx != 0 {
			continue
		}
		if sparc && s.info&0xf == 13 {
			continue
		}
		if uint64(s.name) >= uint64(len(strtab)) {
			return nil
		}
		raw := strtab[s.name:]
		if len(raw) == 0 || raw[0] == 0 {
			continue
		}
		name := f.str(raw)
		sym := Symbol{Name: name, Weak: s.info>>4 == 2}
		if byName != nil {
			if j, ok := byName[name]; ok {
				sym.CRC = versions[j].crc
				versions[j].used = true
			}
		} else {
			for j := range versions {
				if versions[j].name == name {
					sym.CRC = versions[j].crc
					versions[j].used = true
					break
				}
			}
		}
		out = append(out, sym)
	}
	for _, v := range versions {
		if !v.used {
			out = append(out, Symbol{Name: v.name, CRC: v.crc})
		}
	}
	return out
}

// ModuleName returns the module name kmod derives from a module's file
// name: everything before the first ".", with "-" turned into "_", so
// "snd-hda.ko.xz" is "snd_hda". The name comes from the file name only,
// never from .modinfo.
func ModuleName(fileName string) string {
	if i := strings.IndexByte(fileName, '.'); i >= 0 {
		fileName = fileName[:i]
	}
	return strings.ReplaceAll(fileName, "-", "_")
}
