package modfile

import (
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
	f, err := parseELF(data)
	if err != nil {
		return nil, err
	}
	m := &File{}
	if info, _, ok := f.section(".modinfo"); ok {
		m.HasModinfo = true
		for _, s := range splitStrings(info) {
			k, v, _ := strings.Cut(s, "=")
			m.Info = append(m.Info, KV{Key: k, Value: v})
		}
	}
	m.Exports = f.exports()
	m.Needs = f.needs()
	return m, nil
}

// ParseInfo reads only the .modinfo section.
func ParseInfo(data []byte) ([]KV, error) {
	f, err := parseELF(data)
	if err != nil {
		return nil, err
	}
	info, _, ok := f.section(".modinfo")
	if !ok {
		return nil, nil
	}
	var out []KV
	for _, s := range splitStrings(info) {
		k, v, _ := strings.Cut(s, "=")
		out = append(out, KV{Key: k, Value: v})
	}
	return out, nil
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
		name := cstr(strtab, s.name)
		if !strings.HasPrefix(name, "__crc_") {
			continue
		}
		out = append(out, Symbol{Name: name[len("__crc_"):], CRC: f.crc(s)})
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
			versions = append(versions, version{name: string(name), crc: crc})
		}
	}
	var out []Symbol
	syms, strtab, entsize, ok := f.symtab()
	if !ok {
		return nil
	}
	sparc := f.machine == emSPARC || f.machine == emSPARCV9
	n := len(syms) / entsize
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
		name := cstr(strtab, s.name)
		if name == "" {
			continue
		}
		sym := Symbol{Name: name, Weak: s.info>>4 == 2}
		for j := range versions {
			if versions[j].name == name {
				sym.CRC = versions[j].crc
				versions[j].used = true
				break
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
