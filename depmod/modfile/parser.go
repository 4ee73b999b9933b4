package modfile

import (
	"bufio"
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
	// br and plain are reused for compressed files.
	br    *bufio.Reader
	plain []byte
}

// NewParser returns a Parser that decompresses with dec.
func NewParser(dec *Decompressor) *Parser {
	return &Parser{dec: dec, intern: interner{m: make(map[string]string, 1024)}}
}

// ParseFile reads the module at path. Errors wrap the errno kmod would
// report: EINVAL for a file under 6 bytes, not a regular file or a
// malformed ELF file, ENOEXEC for a file that is not ELF, and EFBIG (as a
// *LimitError) for a file or decompressed module over the Decompressor's
// limits. An uncompressed file is mapped, not read: only the parts depmod
// uses are read, so a sparse file costs what those parts hold. A
// compressed file is streamed through its decoder.
func (p *Parser) ParseFile(path string) (*File, error) {
	f, size, err := p.dec.open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.ReadAt(p.head[:], 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	if c := Detect(p.head[:n]); c != None {
		// Streamed from the file: a hole or garbage stops the decoder
		// where it starts, and nothing is read whole.
		if p.br == nil {
			p.br = bufio.NewReaderSize(nil, 64<<10)
		}
		o := &outBuffer{b: p.plain[:0]}
		err := p.dec.decode(o, f, size, c, p.br)
		p.br.Reset(nil)
		defer o.release()
		if !o.mapped {
			p.plain = o.b // keep the larger heap buffer for the next file
		}
		if err != nil {
			return nil, err
		}
		return parse(o.b, nil, &p.intern, p.KeepInfo)
	}
	buf, err := p.sparse.get(int(size))
	if err != nil {
		return nil, err
	}
	p.buf = buf
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

// open opens a module file for reading, refusing what is not a regular
// file (without blocking on a FIFO), is under 6 bytes or is over the size
// limit.
func (d *Decompressor) open(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file: %w", syscall.EINVAL)
	}
	if err == nil && st.Size() < 6 {
		err = fmt.Errorf("%d bytes: %w", st.Size(), syscall.EINVAL)
	}
	if err == nil && st.Size() > d.maxSize {
		err = &LimitError{What: "file size", Size: uint64(st.Size()), Limit: d.maxSize}
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// ReadFile reads the module file at path whole and returns its ELF bytes,
// decompressed when it is compressed, within the limits of d: a file over
// MaxSize is refused by its size before any read, a compressed one is
// streamed through its decoder, and an uncompressed one is read only up
// to its size. Errors are those of Parser.ParseFile, without the path.
func (d *Decompressor) ReadFile(path string) ([]byte, Compression, error) {
	f, size, err := d.open(path)
	if err != nil {
		return nil, None, err
	}
	defer f.Close()
	var head [6]byte
	n, err := f.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		return nil, None, err
	}
	c := Detect(head[:n])
	if c == None {
		data := make([]byte, size)
		if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), data); err != nil {
			return nil, None, err
		}
		return data, None, nil
	}
	o := &outBuffer{}
	if err := d.decode(o, f, size, c, bufio.NewReaderSize(nil, 64<<10)); err != nil {
		o.release()
		return nil, c, err
	}
	return o.heapCopy(), c, nil
}
