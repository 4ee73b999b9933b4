// Package elftest writes small ELF relocatable files shaped like Linux
// kernel modules, for tests: .modinfo, exported symbols with CRCs in
// __kcrctab, undefined (needed) symbols, __versions and
// __ksymtab_strings, as ELF32 or ELF64 in either byte order. Tests use
// them to build module trees with exactly the properties they need, and
// feed the same trees to kmod's depmod and to ours.
package elftest

import (
	"bytes"
	"encoding/binary"
)

// Export is an exported symbol and its CRC.
type Export struct {
	Name string
	CRC  uint32
}

// Need is a symbol the module uses from elsewhere.
type Need struct {
	Name string
	Weak bool
}

// Version is a __versions entry.
type Version struct {
	Name string
	CRC  uint64
}

// Module describes the module file to write.
type Module struct {
	Is32      bool
	BigEndian bool
	Machine   uint16 // default 62 (x86-64) or 3 (i386)
	// Modinfo holds "key=value" strings, written in order.
	Modinfo []string
	// NoModinfo leaves the .modinfo section out.
	NoModinfo bool
	// Exports become __crc_ symbols in .symtab pointing into __kcrctab.
	Exports []Export
	// AbsCRCs stores export CRCs as absolute symbol values instead.
	AbsCRCs bool
	// KsymtabStrings fills __ksymtab_strings (with no __crc_ symbols, depmod
	// takes exports from it).
	KsymtabStrings []string
	// Needs become undefined symbols, in order.
	Needs []Need
	// Versions fill __versions.
	Versions []Version
	// NoSymtab leaves .symtab and .strtab out.
	NoSymtab bool
	// Padding adds a section of that many bytes before the symbol table,
	// to make big files.
	Padding int
}

type section struct {
	name    string
	typ     uint32
	data    []byte
	entsize uint64
	link    uint32
}

// Bytes returns the ELF file.
func (m Module) Bytes() []byte {
	var order binary.ByteOrder = binary.LittleEndian
	if m.BigEndian {
		order = binary.BigEndian
	}
	machine := m.Machine
	if machine == 0 {
		machine = 62
		if m.Is32 {
			machine = 3
		}
	}
	secs := []section{{}}
	add := func(s section) int {
		secs = append(secs, s)
		return len(secs) - 1
	}
	if !m.NoModinfo {
		var b bytes.Buffer
		for _, s := range m.Modinfo {
			b.WriteString(s)
			b.WriteByte(0)
		}
		add(section{name: ".modinfo", typ: 1, data: b.Bytes()})
	}
	if len(m.KsymtabStrings) > 0 {
		var b bytes.Buffer
		for _, s := range m.KsymtabStrings {
			b.WriteString(s)
			b.WriteByte(0)
		}
		add(section{name: "__ksymtab_strings", typ: 1, data: b.Bytes()})
	}
	kcrc := 0
	if len(m.Exports) > 0 && !m.AbsCRCs {
		b := make([]byte, 4*len(m.Exports))
		for i, e := range m.Exports {
			order.PutUint32(b[4*i:], e.CRC)
		}
		kcrc = add(section{name: "__kcrctab", typ: 1, data: b})
	}
	if len(m.Versions) > 0 {
		var b bytes.Buffer
		for _, v := range m.Versions {
			e := make([]byte, 64)
			if m.Is32 {
				order.PutUint32(e, uint32(v.CRC))
				copy(e[4:63], v.Name)
			} else {
				order.PutUint64(e, v.CRC)
				copy(e[8:63], v.Name)
			}
			b.Write(e)
		}
		add(section{name: "__versions", typ: 1, data: b.Bytes()})
	}
	text := add(section{name: ".text", typ: 1, data: []byte{0xc3, 0, 0, 0}})
	if m.Padding > 0 {
		add(section{name: ".rodata.padding", typ: 1, data: make([]byte, m.Padding)})
	}
	if !m.NoSymtab {
		strtab := []byte{0}
		str := func(s string) uint32 {
			off := uint32(len(strtab))
			strtab = append(append(strtab, s...), 0)
			return off
		}
		entsize := 24
		if m.Is32 {
			entsize = 16
		}
		var syms bytes.Buffer
		sym := func(name uint32, info byte, shndx uint16, value uint64) {
			e := make([]byte, entsize)
			if m.Is32 {
				order.PutUint32(e, name)
				order.PutUint32(e[4:], uint32(value))
				e[12] = info
				order.PutUint16(e[14:], shndx)
			} else {
				order.PutUint32(e, name)
				e[4] = info
				order.PutUint16(e[6:], shndx)
				order.PutUint64(e[8:], value)
			}
			syms.Write(e)
		}
		sym(0, 0, 0, 0)
		sym(str("init_module"), 0x12, uint16(text), 0) // GLOBAL FUNC, defined
		for i, e := range m.Exports {
			if m.AbsCRCs {
				sym(str("__crc_"+e.Name), 0x00, 0xfff1, uint64(e.CRC))
			} else {
				sym(str("__crc_"+e.Name), 0x00, uint16(kcrc), uint64(4*i))
			}
			sym(str(e.Name), 0x12, uint16(text), 0)
		}
		for _, n := range m.Needs {
			bind := byte(1)
			if n.Weak {
				bind = 2
			}
			sym(str(n.Name), bind<<4, 0, 0)
		}
		strIdx := len(secs) + 1
		add(section{name: ".symtab", typ: 2, data: syms.Bytes(), entsize: uint64(entsize), link: uint32(strIdx)})
		add(section{name: ".strtab", typ: 3, data: strtab})
	}
	shstr := []byte{0}
	nameOff := make([]uint32, len(secs)+1)
	for i := 1; i < len(secs); i++ {
		nameOff[i] = uint32(len(shstr))
		shstr = append(append(shstr, secs[i].name...), 0)
	}
	nameOff[len(secs)] = uint32(len(shstr))
	shstr = append(append(shstr, ".shstrtab"...), 0)
	secs = append(secs, section{name: ".shstrtab", typ: 3, data: shstr})

	ehsize, shentsize := 64, 64
	if m.Is32 {
		ehsize, shentsize = 52, 40
	}
	var out bytes.Buffer
	out.Write(make([]byte, ehsize))
	offsets := make([]uint64, len(secs))
	for i := 1; i < len(secs); i++ {
		for out.Len()%8 != 0 {
			out.WriteByte(0)
		}
		offsets[i] = uint64(out.Len())
		out.Write(secs[i].data)
	}
	for out.Len()%8 != 0 {
		out.WriteByte(0)
	}
	shoff := uint64(out.Len())
	for i, s := range secs {
		h := make([]byte, shentsize)
		size := uint64(len(s.data))
		if m.Is32 {
			order.PutUint32(h, nameOff[i])
			order.PutUint32(h[4:], s.typ)
			order.PutUint32(h[16:], uint32(offsets[i]))
			order.PutUint32(h[20:], uint32(size))
			order.PutUint32(h[24:], s.link)
			order.PutUint32(h[36:], uint32(s.entsize))
		} else {
			order.PutUint32(h, nameOff[i])
			order.PutUint32(h[4:], s.typ)
			order.PutUint64(h[24:], offsets[i])
			order.PutUint64(h[32:], size)
			order.PutUint32(h[40:], s.link)
			order.PutUint64(h[56:], s.entsize)
		}
		out.Write(h)
	}
	b := out.Bytes()
	copy(b, "\x7fELF")
	b[6] = 1 // EV_CURRENT
	if m.Is32 {
		b[4] = 1
	} else {
		b[4] = 2
	}
	if m.BigEndian {
		b[5] = 2
	} else {
		b[5] = 1
	}
	order.PutUint16(b[16:], 1) // ET_REL
	order.PutUint16(b[18:], machine)
	order.PutUint32(b[20:], 1)
	if m.Is32 {
		order.PutUint32(b[0x20:], uint32(shoff))
		order.PutUint16(b[0x28:], uint16(ehsize))
		order.PutUint16(b[0x2e:], uint16(shentsize))
		order.PutUint16(b[0x30:], uint16(len(secs)))
		order.PutUint16(b[0x32:], uint16(len(secs)-1))
	} else {
		order.PutUint64(b[0x28:], shoff)
		order.PutUint16(b[0x34:], uint16(ehsize))
		order.PutUint16(b[0x3a:], uint16(shentsize))
		order.PutUint16(b[0x3c:], uint16(len(secs)))
		order.PutUint16(b[0x3e:], uint16(len(secs)-1))
	}
	return b
}
