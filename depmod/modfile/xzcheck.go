package modfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The xz decoder allocates the dictionary a block header declares (the
// configured capacity is a floor, not a ceiling), so checkXZ walks the
// container first, without decompressing: every stream, block header and
// LZMA2 chunk header, in the order the decoder reads them (the xz file
// format 1.1.0 and its LZMA2 chunk framing). It refuses a dictionary over
// maxDict and a file whose chunks add up to more than maxSize bytes, and
// costs one small read per chunk (each at most 64 KiB compressed).

var errXZFormat = errors.New("malformed xz container")

// xzWalker reads an xz file from an io.ReaderAt.
type xzWalker struct {
	r         io.ReaderAt
	size, pos int64
	buf       [1024]byte
}

// read returns the next n bytes (n <= 1024).
func (w *xzWalker) read(n int) ([]byte, error) {
	if int64(n) > w.size-w.pos {
		return nil, fmt.Errorf("%w: cut off at byte %d", errXZFormat, w.size)
	}
	b := w.buf[:n]
	if _, err := w.r.ReadAt(b, w.pos); err != nil && err != io.EOF {
		return nil, err
	}
	w.pos += int64(n)
	return b, nil
}

func (w *xzWalker) skip(n int64) error {
	if n < 0 || n > w.size-w.pos {
		return fmt.Errorf("%w: cut off at byte %d", errXZFormat, w.size)
	}
	w.pos += n
	return nil
}

func (w *xzWalker) byte() (byte, error) {
	b, err := w.read(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// varint reads a multibyte integer of at most 9 bytes.
func (w *xzWalker) varint() (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		b, err := w.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: integer too long at byte %d", errXZFormat, w.pos)
}

// varintIn reads a multibyte integer from b at *p.
func varintIn(b []byte, p *int) (uint64, bool) {
	var v uint64
	for i := 0; i < 9 && *p < len(b); i++ {
		c := b[*p]
		*p++
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}

// xzDictSize decodes the LZMA2 dictionary size property.
func xzDictSize(p byte) (uint64, bool) {
	switch {
	case p > 40:
		return 0, false
	case p == 40:
		return 1<<32 - 1, true
	}
	return uint64(2|p&1) << (p/2 + 11), true
}

// xzInfo is what checkXZ learns of a file: the decompressed size its
// chunk headers add up to, and the largest dictionary a block declares.
type xzInfo struct {
	size, dict uint64
}

// checkXZ walks the xz file of size bytes in r; see above.
func checkXZ(r io.ReaderAt, size, maxDict, maxSize int64) (xzInfo, error) {
	w := &xzWalker{r: r, size: size}
	var info xzInfo
	total := &info.size
	for stream := 0; ; stream++ {
		if stream > 0 {
			// Stream padding: zero bytes, then another stream or the end.
			for w.pos < w.size {
				b, err := w.read(1)
				if err != nil {
					return info, err
				}
				if b[0] != 0 {
					w.pos--
					break
				}
			}
			if w.pos == w.size {
				return info, nil
			}
		}
		h, err := w.read(12)
		if err != nil {
			return info, err
		}
		if string(h[:6]) != "\xfd7zXZ\x00" {
			return info, fmt.Errorf("%w: no stream header at byte %d", errXZFormat, w.pos-12)
		}
		checkSize := int64([16]int{0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64}[h[7]&0x0f])
		for {
			b, err := w.byte()
			if err != nil {
				return info, err
			}
			if b == 0 {
				break // the index
			}
			hsize := (int64(b) + 1) * 4
			hdr, err := w.read(int(hsize) - 1)
			if err != nil {
				return info, err
			}
			dict, err := checkXZBlockHeader(hdr, maxDict)
			if err != nil {
				return info, err
			}
			info.dict = max(info.dict, dict)
			start := w.pos
			if err := w.lzma2Chunks(total, uint64(maxSize)); err != nil {
				return info, err
			}
			pad := (4 - (hsize+w.pos-start)%4) % 4
			if err := w.skip(pad + checkSize); err != nil {
				return info, err
			}
		}
		indexStart := w.pos - 1
		n, err := w.varint()
		if err != nil {
			return info, err
		}
		if n > uint64(w.size) {
			return info, fmt.Errorf("%w: %d index records", errXZFormat, n)
		}
		for i := uint64(0); i < 2*n; i++ {
			if _, err := w.varint(); err != nil {
				return info, err
			}
		}
		pad := (4 - (w.pos-indexStart)%4) % 4
		if err := w.skip(pad + 4 + 12); err != nil { // padding, CRC32, stream footer
			return info, err
		}
	}
}

// checkXZBlockHeader checks the filters of a block header (without its
// size byte): LZMA2 alone, its dictionary within maxDict, which it
// returns.
func checkXZBlockHeader(hdr []byte, maxDict int64) (uint64, error) {
	flags := hdr[0]
	p := 1
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			if _, ok := varintIn(hdr, &p); !ok {
				return 0, fmt.Errorf("%w: block header", errXZFormat)
			}
		}
	}
	n := int(flags&3) + 1
	for i := 0; i < n; i++ {
		id, ok1 := varintIn(hdr, &p)
		psize, ok2 := varintIn(hdr, &p)
		if !ok1 || !ok2 || psize > uint64(len(hdr)-p) {
			return 0, fmt.Errorf("%w: block header", errXZFormat)
		}
		props := hdr[p : p+int(psize)]
		p += int(psize)
		if id != 0x21 || i != n-1 {
			return 0, fmt.Errorf("%w: filter %#x is not supported", errXZFormat, id)
		}
		if psize != 1 {
			return 0, fmt.Errorf("%w: LZMA2 properties", errXZFormat)
		}
		dict, ok := xzDictSize(props[0])
		if !ok {
			return 0, fmt.Errorf("%w: LZMA2 dictionary property %d", errXZFormat, props[0])
		}
		if dict > uint64(maxDict) {
			return 0, &LimitError{What: "dictionary", Size: dict, Limit: maxDict}
		}
		return dict, nil
	}
	return 0, fmt.Errorf("%w: block header", errXZFormat)
}

// lzma2Chunks skips the LZMA2 chunks of a block up to its end marker,
// adding their uncompressed sizes to total.
func (w *xzWalker) lzma2Chunks(total *uint64, maxSize uint64) error {
	for {
		c, err := w.byte()
		if err != nil {
			return err
		}
		var unpacked, packed uint64
		switch {
		case c == 0:
			return nil
		case c == 1 || c == 2:
			b, err := w.read(2)
			if err != nil {
				return err
			}
			unpacked = uint64(binary.BigEndian.Uint16(b)) + 1
			packed = unpacked
		case c >= 0x80:
			n := 4
			if c>>5&3 >= 2 {
				n = 5 // a properties byte follows
			}
			b, err := w.read(n)
			if err != nil {
				return err
			}
			unpacked = (uint64(c&0x1f)<<16 | uint64(binary.BigEndian.Uint16(b))) + 1
			packed = uint64(binary.BigEndian.Uint16(b[2:])) + 1
		default:
			return fmt.Errorf("%w: LZMA2 control byte %#x at byte %d", errXZFormat, c, w.pos-1)
		}
		*total += unpacked
		if *total > maxSize {
			return &LimitError{What: "decompressed size", Size: *total, Limit: int64(maxSize)}
		}
		if err := w.skip(int64(packed)); err != nil {
			return err
		}
	}
}
