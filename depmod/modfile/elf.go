// Package modfile reads what depmod and modprobe need from a Linux kernel
// module file: the .modinfo key/value pairs, the symbols it exports (with
// their CRCs) and the symbols it needs, from ELF32 or ELF64 files of either
// byte order, compressed with zstd, xz or gzip or not at all.
//
// It reads the file exactly as kmod 30's libkmod does, including its
// fallbacks (exports from __ksymtab_strings when there are no __crc_
// symbols) and its limits (the first section of a name wins; sections that
// do not fit the file are ignored), so depmod built on it produces kmod's
// output. It never panics on malformed input; errors name what is wrong.
package modfile

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"syscall"
)

// Errors a malformed file gives, matching the errno kmod reports:
// ErrNotELF is ENOEXEC ("Exec format error"), ErrInvalid EINVAL.
var (
	ErrNotELF  = fmt.Errorf("not an ELF file: %w", syscall.ENOEXEC)
	ErrInvalid = fmt.Errorf("malformed ELF file: %w", syscall.EINVAL)
)

// Machine values that need special symbol handling.
const (
	emSPARC   = 2
	emSPARCV9 = 43
)

// elfFile is a parsed ELF header and section table.
type elfFile struct {
	// data is the file, or a buffer of the file's size in which only the
	// ranges fill has loaded are valid.
	data []byte
	// fill loads a byte range of the file into data; nil when data holds
	// the whole file.
	fill     func(off, size uint64) error
	is64     bool
	order    binary.ByteOrder
	machine  uint16
	shoff    uint64
	shnum    int
	shentsz  int
	shstrtab []byte
	intern   *interner

	// The symbol table, looked up once.
	symsDone   bool
	syms       []byte
	strtab     []byte
	symEntsize int
	symsOK     bool
}

// section is one section header's useful fields.
type section struct {
	name   string
	offset uint64
	size   uint64
}

// parseELF checks the header as kmod_elf_new does. With fill, only the
// first 64 bytes of data need to be valid; the rest is loaded on demand.
func parseELF(data []byte, fill func(off, size uint64) error) (*elfFile, error) {
	if len(data) <= 16 || string(data[:4]) != "\x7fELF" {
		return nil, ErrNotELF
	}
	f := &elfFile{data: data, fill: fill}
	switch data[4] {
	case 1:
		if len(data) <= 52 {
			return nil, fmt.Errorf("%w: %d bytes is too short for an ELF32 header", ErrInvalid, len(data))
		}
	case 2:
		f.is64 = true
		if len(data) <= 64 {
			return nil, fmt.Errorf("%w: %d bytes is too short for an ELF64 header", ErrInvalid, len(data))
		}
	default:
		return nil, fmt.Errorf("%w: unknown ELF class %d", ErrInvalid, data[4])
	}
	switch data[5] {
	case 1:
		f.order = binary.LittleEndian
	case 2:
		f.order = binary.BigEndian
	default:
		return nil, fmt.Errorf("%w: unknown ELF data encoding %d", ErrInvalid, data[5])
	}
	f.machine = f.order.Uint16(data[18:])
	var shstrndx int
	if f.is64 {
		f.shoff = f.order.Uint64(data[0x28:])
		f.shentsz = int(f.order.Uint16(data[0x3a:]))
		f.shnum = int(f.order.Uint16(data[0x3c:]))
		shstrndx = int(f.order.Uint16(data[0x3e:]))
		if f.shentsz != 64 {
			return nil, fmt.Errorf("%w: section header size %d, want 64", ErrInvalid, f.shentsz)
		}
	} else {
		f.shoff = uint64(f.order.Uint32(data[0x20:]))
		f.shentsz = int(f.order.Uint16(data[0x2e:]))
		f.shnum = int(f.order.Uint16(data[0x30:]))
		shstrndx = int(f.order.Uint16(data[0x32:]))
		if f.shentsz != 40 {
			return nil, fmt.Errorf("%w: section header size %d, want 40", ErrInvalid, f.shentsz)
		}
	}
	if f.shoff > uint64(len(data)) || uint64(f.shnum)*uint64(f.shentsz) > uint64(len(data))-f.shoff {
		return nil, fmt.Errorf("%w: section headers (%d at offset %d) go past the end of the file", ErrInvalid, f.shnum, f.shoff)
	}
	if err := f.load(f.shoff, uint64(f.shnum)*uint64(f.shentsz)); err != nil {
		return nil, err
	}
	if shstrndx >= f.shnum {
		return nil, fmt.Errorf("%w: section name table index %d out of %d sections", ErrInvalid, shstrndx, f.shnum)
	}
	off, size := f.sectionBounds(shstrndx)
	if size == 0 || off > uint64(len(data)) || size > uint64(len(data))-off {
		return nil, fmt.Errorf("%w: section name table outside the file or empty", ErrInvalid)
	}
	if err := f.load(off, size); err != nil {
		return nil, err
	}
	f.shstrtab = data[off : off+size]
	if f.shstrtab[len(f.shstrtab)-1] != 0 {
		return nil, fmt.Errorf("%w: section name table does not end in NUL", ErrInvalid)
	}
	return f, nil
}

// load makes sure data[off:off+size] holds the file's bytes.
func (f *elfFile) load(off, size uint64) error {
	if f.fill == nil || size == 0 {
		return nil
	}
	return f.fill(off, size)
}

// sectionBounds returns the file offset and size of section i.
func (f *elfFile) sectionBounds(i int) (uint64, uint64) {
	h := f.data[f.shoff+uint64(i*f.shentsz):]
	if f.is64 {
		return f.order.Uint64(h[24:]), f.order.Uint64(h[32:])
	}
	return uint64(f.order.Uint32(h[16:])), uint64(f.order.Uint32(h[20:]))
}

// section returns the bytes of the first section named name, skipping
// sections that do not fit the file, as kmod does.
func (f *elfFile) section(name string) ([]byte, int, bool) {
	for i := 1; i < f.shnum; i++ {
		off, size := f.sectionBounds(i)
		if off > uint64(len(f.data)) || size > uint64(len(f.data))-off {
			continue
		}
		if !f.nameIs(i, name) {
			continue
		}
		if f.load(off, size) != nil {
			return nil, 0, false
		}
		return f.data[off : off+size], i, true
	}
	return nil, 0, false
}

// nameIs reports whether section i is called name, without allocating.
func (f *elfFile) nameIs(i int, name string) bool {
	nameOff := uint64(f.order.Uint32(f.data[f.shoff+uint64(i*f.shentsz):]))
	if nameOff >= uint64(len(f.shstrtab)) {
		return false
	}
	s := f.shstrtab[nameOff:]
	return len(s) > len(name) && s[len(name)] == 0 && string(s[:len(name)]) == name
}

// symbol is one .symtab entry.
type symbol struct {
	name  uint32
	info  byte
	shndx uint16
	value uint64
}

// symtab returns the symbol table and its string table, or false when
// either is missing or malformed.
func (f *elfFile) symtab() (syms []byte, strtab []byte, entsize int, ok bool) {
	if !f.symsDone {
		f.symsDone = true
		f.syms, f.strtab, f.symEntsize, f.symsOK = f.findSymtab()
	}
	return f.syms, f.strtab, f.symEntsize, f.symsOK
}

// findSymtab looks up .symtab and .strtab.
func (f *elfFile) findSymtab() (syms []byte, strtab []byte, entsize int, ok bool) {
	strtab, _, ok1 := f.section(".strtab")
	syms, _, ok2 := f.section(".symtab")
	if !ok1 || !ok2 {
		return nil, nil, 0, false
	}
	entsize = 16
	if f.is64 {
		entsize = 24
	}
	if len(syms)%entsize != 0 {
		return nil, nil, 0, false
	}
	return syms, strtab, entsize, true
}

// symbolAt decodes entry i of a symbol table.
func (f *elfFile) symbolAt(syms []byte, entsize, i int) symbol {
	e := syms[i*entsize:]
	if f.is64 {
		return symbol{name: f.order.Uint32(e), info: e[4], shndx: f.order.Uint16(e[6:]), value: f.order.Uint64(e[8:])}
	}
	return symbol{name: f.order.Uint32(e), value: uint64(f.order.Uint32(e[4:])), info: e[12], shndx: f.order.Uint16(e[14:])}
}

func indexNUL(b []byte) int { return bytes.IndexByte(b, 0) }

// eachString calls fn for each string of a string section, as kmod splits
// them: leading NULs skipped (and nothing at all when one byte or less
// remains), runs of NULs separating strings, a last string without NUL
// still counted.
func eachString(b []byte, fn func([]byte)) {
	i := 0
	for i < len(b) && b[i] == 0 {
		i++
	}
	if len(b)-i <= 1 {
		return
	}
	for i < len(b) {
		j := i
		for j < len(b) && b[j] != 0 {
			j++
		}
		if j > i {
			fn(b[i:j])
		}
		i = j + 1
	}
}

// splitStrings returns the strings of a string section (see eachString).
func splitStrings(b []byte) []string {
	var out []string
	eachString(b, func(s []byte) { out = append(out, string(s)) })
	return out
}

// str returns the NUL-terminated string at the start of b, interned when
// the file has an interner.
func (f *elfFile) str(b []byte) string {
	if j := indexNUL(b); j >= 0 {
		b = b[:j]
	}
	if f.intern != nil {
		return f.intern.get(b)
	}
	return string(b)
}

// interner shares the memory of repeated strings, such as the kernel
// symbols every module needs.
type interner struct {
	m map[string]string
}

func (in *interner) get(b []byte) string {
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	in.m[s] = s
	return s
}
