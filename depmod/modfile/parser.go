package modfile

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Parser reads module files from disk, loading only the parts depmod
// uses (the ELF header, the section table and a few sections) into a
// buffer it reuses, and sharing the memory of repeated symbol names. A
// Parser is not safe for concurrent use: give each goroutine its own.
type Parser struct {
	// KeepInfo, when set, selects the .modinfo keys to keep; the others
	// are dropped as they are read, which saves memory on big trees.
	KeepInfo func(key string) bool

	dec    *Decompressor
	buf    []byte
	sparse sparseBuffer
	head   [64]byte
	intern interner
	file   *os.File
	ranges [][2]uint64
	// comp and plain are reused for compressed files.
	comp, plain []byte
}

// NewParser returns a Parser that decompresses with dec.
func NewParser(dec *Decompressor) *Parser {
	return &Parser{dec: dec, intern: interner{m: make(map[string]string, 1024)}}
}

// ParseFile reads the module at path. Errors wrap the errno kmod would
// report: EINVAL for a file under 6 bytes or a malformed ELF file, ENOEXEC
// for a file that is not ELF.
func (p *Parser) ParseFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 6 {
		return nil, fmt.Errorf("%d bytes: %w", size, syscall.EINVAL)
	}
	n, err := f.ReadAt(p.head[:], 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	if Detect(p.head[:n]) != None {
		if int64(cap(p.comp)) < size {
			p.comp = make([]byte, size)
		}
		p.comp = p.comp[:size]
		if _, err := f.ReadAt(p.comp, 0); err != nil && err != io.EOF {
			return nil, err
		}
		elf, _, err := p.dec.DecompressInto(p.plain, p.comp)
		if err != nil {
			return nil, err
		}
		if cap(elf) <= 64<<20 {
			p.plain = elf // keep the larger buffer for the next file
		}
		return parse(elf, nil, &p.intern, p.KeepInfo)
	}
	if size > 1<<32 {
		return nil, fmt.Errorf("%d bytes: %w", size, syscall.EFBIG)
	}
	p.buf = p.sparse.get(int(size))
	copy(p.buf, p.head[:n])
	p.file = f
	p.ranges = append(p.ranges[:0], [2]uint64{0, uint64(n)})
	defer func() {
		p.file, p.buf = nil, nil
		p.sparse.release()
	}()
	return parse(p.buf, p.fill, &p.intern, p.KeepInfo)
}

// fill reads buf[off:off+size] from the file unless an earlier read
// covered it.
func (p *Parser) fill(off, size uint64) error {
	end := off + size
	for _, r := range p.ranges {
		if off >= r[0] && end <= r[1] {
			return nil
		}
	}
	if _, err := p.file.ReadAt(p.buf[off:end], int64(off)); err != nil && err != io.EOF {
		return err
	}
	p.ranges = append(p.ranges, [2]uint64{off, end})
	return nil
}
