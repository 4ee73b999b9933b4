package modfile

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/mikelolasagasti/xz"
)

// Compression is the format of a module file, told by its magic bytes.
type Compression int

// The formats a module file may be in.
const (
	None Compression = iota
	Zstd
	XZ
	Gzip
)

// String names the format.
func (c Compression) String() string {
	return [...]string{"none", "zstd", "xz", "gzip"}[c]
}

// DefaultMaxSize bounds a module unless a Decompressor says otherwise: the
// decompressed ELF bytes of a compressed module, and the size of any module
// file on disk, compressed or not. The largest module of Debian 12's 6.1
// kernel is 19 MiB (amdgpu); modules with full debug information are a
// few hundred MiB at most.
const DefaultMaxSize = 512 << 20

// DefaultMaxWindow bounds the history a decoder keeps unless a
// Decompressor says otherwise: the zstd window (or single-segment frame
// size) and the xz (LZMA2) dictionary a file declares. It is the zstd
// command's own default limit; xz's presets use at most 64 MiB, and the
// kernel's build compresses modules with far smaller ones.
const DefaultMaxWindow = 128 << 20

// LimitError tells that a module file goes past one of a Decompressor's
// limits. It wraps syscall.EFBIG.
type LimitError struct {
	// What names the quantity: "file size", "decompressed size",
	// "window" (zstd), "frame size" (zstd) or "dictionary" (xz).
	What string
	// Size is what the file declares or holds, when known (else 0).
	Size uint64
	// Limit is the limit in bytes.
	Limit int64
}

// Error says what went past which limit.
func (e *LimitError) Error() string {
	if e.Size > 0 {
		return fmt.Sprintf("%s of %s is over the limit of %s", e.What, bytesString(e.Size), bytesString(uint64(e.Limit)))
	}
	return fmt.Sprintf("%s is over the limit of %s", e.What, bytesString(uint64(e.Limit)))
}

// bytesString writes n in bytes, with its size in MiB or GiB when large.
func bytesString(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%d bytes (%.1f GiB)", n, float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// Unwrap returns syscall.EFBIG.
func (e *LimitError) Unwrap() error { return syscall.EFBIG }

// Detect tells the format from the first bytes, as libkmod does: the
// magic decides, not the file name.
func Detect(data []byte) Compression {
	switch {
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return XZ
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		return Gzip
	}
	return None
}

// Decompressor decompresses module files with pure Go decoders, in bounded
// memory: decoders stream, output grows only as decoded bytes arrive and
// never past MaxSize, and no size a header declares is allocated before it
// is checked against the limits. Output up to 4 MiB is on the Go heap
// (a Parser reuses it for the next module); past that it is an anonymous
// mapping, made once at the size the xz chunk headers or the zstd frame
// header declare when they do (its pages become resident only as bytes are
// decoded into them), grown in place otherwise, and returned to the system
// as soon as the module is parsed. One decompression holds at most MaxSize
// of output (on Linux; elsewhere 1.5×MaxSize while its buffer last
// doubles), plus up to 8 MiB of heap the output used while it grew to
// 4 MiB, and MaxWindow of decoder history; a header declaring more than
// the limits is refused before any of it is allocated. Decompress and
// ReadFile return heap memory, so they also copy the output once. It is
// safe for concurrent use; share one per run: it keeps one decoder per
// concurrent decompression for the next file.
type Decompressor struct {
	maxSize   int64
	maxWindow int64
	zstd      sync.Pool // of *zstd.Decoder, one per concurrent decompression
	xz        sync.Pool // of *xz.Reader, likewise
}

// pooledDict is the largest xz dictionary a pooled reader may keep: a
// reader that needed more for a file is dropped after it, so the pool
// holds what kernel modules use (1 MiB), not what one file asked for.
const pooledDict = 8 << 20

// Option configures a Decompressor (see NewDecompressor).
type Option func(*decompressorOptions)

type decompressorOptions struct {
	maxSize, maxWindow int64
}

// WithMaxSize sets the most bytes a Decompressor produces from one file,
// and the largest file it reads (default DefaultMaxSize); NewDecompressor
// refuses n <= 0.
func WithMaxSize(n int64) Option {
	return func(o *decompressorOptions) { o.maxSize = n }
}

// WithMaxWindow sets the largest zstd window and xz dictionary accepted
// (default DefaultMaxWindow). It is never more than the Decompressor's
// maximum size; NewDecompressor refuses n <= 0.
func WithMaxWindow(n int64) Option {
	return func(o *decompressorOptions) { o.maxWindow = n }
}

// NewDecompressor returns a Decompressor, by default one that refuses
// to produce more than DefaultMaxSize bytes from one file or to read a
// larger file, with windows up to DefaultMaxWindow.
func NewDecompressor(opts ...Option) (*Decompressor, error) {
	o := decompressorOptions{maxSize: DefaultMaxSize, maxWindow: DefaultMaxWindow}
	for _, f := range opts {
		f(&o)
	}
	if o.maxSize <= 0 {
		return nil, fmt.Errorf("modfile: WithMaxSize(%d): the size limit must be positive", o.maxSize)
	}
	if o.maxWindow <= 0 {
		return nil, fmt.Errorf("modfile: WithMaxWindow(%d): the window limit must be positive", o.maxWindow)
	}
	d := &Decompressor{maxSize: o.maxSize, maxWindow: max(min(o.maxWindow, o.maxSize), zstd.MinWindowSize)}
	if _, err := d.newZstd(); err != nil {
		return nil, err
	}
	return d, nil
}

// MaxSize is the largest module, on disk or decompressed, d accepts.
func (d *Decompressor) MaxSize() int64 { return d.maxSize }

// MaxWindow is the largest zstd window or xz dictionary d accepts.
func (d *Decompressor) MaxWindow() int64 { return d.maxWindow }

func (d *Decompressor) newZstd() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(uint64(d.maxWindow)), zstd.WithDecoderMaxMemory(uint64(d.maxSize)))
}

// Close releases the decoders.
func (d *Decompressor) Close() {
	for {
		z, _ := d.zstd.Get().(*zstd.Decoder)
		if z == nil {
			break
		}
		z.Close()
	}
	for d.xz.Get() != nil { // readers hold only memory
	}
}

// Decompress returns the module's ELF bytes: data itself when it is not
// compressed. A file of fewer than 6 bytes is invalid, as in libkmod.
func (d *Decompressor) Decompress(data []byte) ([]byte, Compression, error) {
	return d.DecompressInto(nil, data)
}

// DecompressInto is Decompress writing into dst's storage when it is large
// enough, so a caller can reuse one buffer for many files.
func (d *Decompressor) DecompressInto(dst, data []byte) ([]byte, Compression, error) {
	if len(data) < 6 {
		return nil, None, fmt.Errorf("%d bytes: %w", len(data), syscall.EINVAL)
	}
	c := Detect(data)
	if c == None {
		return data, None, nil
	}
	if int64(len(data)) > d.maxSize {
		return nil, c, &LimitError{What: "file size", Size: uint64(len(data)), Limit: d.maxSize}
	}
	o := &outBuffer{b: dst[:0]}
	err := d.decode(o, bytes.NewReader(data), int64(len(data)), c, nil)
	if err != nil {
		o.release()
		return nil, c, err
	}
	return o.heapCopy(), c, nil
}

// decode decompresses the size bytes of r, in format c, into o. br, when
// not nil, is a buffer to read r through.
func (d *Decompressor) decode(o *outBuffer, r io.ReaderAt, size int64, c Compression, br *bufio.Reader) error {
	var in io.Reader = io.NewSectionReader(r, 0, size)
	if br != nil {
		br.Reset(in)
		in = br
	}
	var err error
	switch c {
	case Zstd:
		err = d.decodeZstd(o, r, in, size)
	case XZ:
		var info xzInfo
		if info, err = checkXZ(r, size, d.maxWindow, d.maxSize); err == nil {
			if err = o.reserve(info.size); err == nil {
				err = d.decodeXZ(o, in, size, info)
			}
		}
	case Gzip:
		var gr *gzip.Reader
		gr, err = gzip.NewReader(in)
		if err == nil {
			err = readBounded(gr, o, d.maxSize, size)
		}
	}
	if err != nil {
		return fmt.Errorf("%s data: %w", c, err)
	}
	return nil
}

// decodeXZ decodes an xz file checkXZ accepted with a pooled reader.
func (d *Decompressor) decodeXZ(o *outBuffer, in io.Reader, size int64, info xzInfo) (err error) {
	xr, _ := d.xz.Get().(*xz.Reader)
	if xr == nil {
		if xr, err = xz.NewReader(nil, uint32(min(d.maxWindow, 1<<32-1))); err != nil {
			return err
		}
	}
	defer func() {
		// The decoder is a port of C code; should it index out of range
		// on some input, that file is reported, and the run goes on.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: the decoder failed: %v", errXZFormat, p)
			return
		}
		if err == nil && info.dict <= pooledDict {
			d.xz.Put(xr)
		}
	}()
	if err = xr.Reset(in); err != nil {
		return d.xzError(err)
	}
	return d.xzError(readBounded(xr, o, d.maxSize, size))
}

// xzError names the limit the decoder met, which checkXZ should have
// refused first.
func (d *Decompressor) xzError(err error) error {
	if errors.Is(err, xz.ErrMemlimit) {
		return &LimitError{What: "dictionary", Limit: d.maxWindow}
	}
	return err
}

// decodeZstd decodes a zstd stream with a pooled streaming decoder, after
// checking the first frame's header against the limits, so the error can
// say what the file declares.
func (d *Decompressor) decodeZstd(o *outBuffer, r io.ReaderAt, in io.Reader, size int64) error {
	var head [18]byte
	n, _ := r.ReadAt(head[:], 0)
	if fh, ok := parseZstdFrameHeader(head[:n]); ok {
		if fh.singleSegment && fh.contentSize > uint64(d.maxSize) {
			return &LimitError{What: "frame size", Size: fh.contentSize, Limit: d.maxSize}
		}
		if fh.window > uint64(d.maxWindow) {
			return &LimitError{What: "window", Size: fh.window, Limit: d.maxWindow}
		}
		if fh.contentSize <= uint64(d.maxSize) {
			if err := o.reserve(fh.contentSize); err != nil {
				return err
			}
		}
	}
	z, _ := d.zstd.Get().(*zstd.Decoder)
	if z == nil {
		var err error
		if z, err = d.newZstd(); err != nil {
			return err
		}
	}
	if err := z.Reset(in); err != nil {
		z.Close()
		return err
	}
	err := readBounded(z, o, d.maxSize, size)
	// A later frame may declare too much too.
	switch {
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		err = &LimitError{What: "window", Limit: d.maxWindow}
	case errors.Is(err, zstd.ErrFrameSizeExceeded):
		err = &LimitError{What: "frame size", Limit: d.maxSize}
	}
	if rerr := z.Reset(nil); rerr != nil || err != nil {
		// A decoder that failed mid-stream is not reused.
		z.Close()
	} else {
		d.zstd.Put(z)
	}
	return err
}

// zstdFrameHeader is what a zstd frame header declares.
type zstdFrameHeader struct {
	window        uint64
	contentSize   uint64
	singleSegment bool
}

// parseZstdFrameHeader reads the header of the zstd frame data starts
// with (RFC 8878 §3.1.1.1).
func parseZstdFrameHeader(data []byte) (zstdFrameHeader, bool) {
	if len(data) < 5 {
		return zstdFrameHeader{}, false
	}
	fhd := data[4]
	pos := 5
	h := zstdFrameHeader{singleSegment: fhd&0x20 != 0}
	if !h.singleSegment {
		if pos >= len(data) {
			return h, false
		}
		wd := data[pos]
		pos++
		base := uint64(1) << (10 + wd>>3)
		h.window = base + base/8*uint64(wd&7)
	}
	pos += [4]int{0, 1, 2, 4}[fhd&3]
	fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcsSize == 0 && h.singleSegment {
		fcsSize = 1
	}
	if fcsSize > 0 {
		if pos+fcsSize > len(data) {
			return h, false
		}
		var v uint64
		for i := fcsSize - 1; i >= 0; i-- {
			v = v<<8 | uint64(data[pos+i])
		}
		if fcsSize == 2 {
			v += 256
		}
		h.contentSize = v
		if h.singleSegment {
			h.window = v
		}
	}
	return h, true
}

// heapOutput is the largest output kept on the Go heap (a Parser reuses
// it for the next module, so small modules cost the collector nothing);
// past it the buffer is an anonymous mapping, returned to the system the
// moment it is replaced or released. (The heap never gives address space
// back, so a heap buffer the size of the largest module would stay
// resident for the rest of the run, one per worker.)
const heapOutput = 4 << 20

// outBuffer is a decompression's output: on the heap while small, then
// mapped.
type outBuffer struct {
	b      []byte
	mapped bool
}

// reserve makes room for n bytes of output, which headers declare and the
// limits allow, so the output needs no growing. Past heapOutput it
// maps them: only the pages decoded into become resident, so a header
// that declares more than the data holds costs address space, not memory.
func (o *outBuffer) reserve(n uint64) error {
	n++ // room for the read that meets the end
	if n <= uint64(cap(o.b)) || o.mapped {
		return nil
	}
	if n <= heapOutput {
		o.b = make([]byte, 0, max(n, min(2*uint64(cap(o.b)), heapOutput)))
		return nil
	}
	if !lazyMapping {
		return nil // grown as bytes arrive
	}
	m, err := mapAnon(int(n))
	if err != nil {
		return fmt.Errorf("decompressed output of %s: %w", bytesString(n), err)
	}
	o.b, o.mapped = m[:0], true
	return nil
}

// grow makes room for at least one more byte, doubling the capacity but
// never past limit+1.
func (o *outBuffer) grow(limit int64) error {
	n := min(limit+1, int64(2*cap(o.b))+4096)
	if n <= heapOutput {
		nb := make([]byte, len(o.b), n)
		copy(nb, o.b)
		o.b = nb
		return nil
	}
	if o.mapped {
		m, err := remap(o.b, int(n))
		if err != nil {
			return fmt.Errorf("decompressed output past %s: %w", bytesString(uint64(len(o.b))), err)
		}
		o.b = m
		return nil
	}
	m, err := mapAnon(int(n))
	if err != nil {
		return fmt.Errorf("decompressed output past %s: %w", bytesString(uint64(len(o.b))), err)
	}
	copy(m, o.b)
	o.b, o.mapped = m[:len(o.b)], true
	return nil
}

// release unmaps a mapped buffer.
func (o *outBuffer) release() {
	if o.mapped {
		unmap(o.b)
		o.b, o.mapped = nil, false
	}
}

// heapCopy returns the output as heap memory the caller may keep,
// releasing the mapping.
func (o *outBuffer) heapCopy() []byte {
	if !o.mapped {
		return o.b
	}
	out := make([]byte, len(o.b))
	copy(out, o.b)
	o.release()
	return out
}

// readBounded reads r to its end into o, failing as soon as it yields
// more than limit bytes. The buffer starts at a few times the compressed
// size (inSize), at most 1 MiB, and doubles as data arrives, never past
// limit+1 bytes, so
// memory follows what the stream really holds, not what it declares. Past
// heapOutput the buffer is mapped and grows in place (mremap on Linux), so
// it never holds more than limit+1 bytes.
func readBounded(r io.Reader, o *outBuffer, limit, inSize int64) error {
	o.b = o.b[:0]
	if cap(o.b) == 0 {
		o.b = make([]byte, 0, min(limit+1, max(min(4*inSize, 1<<20), 64<<10)))
	}
	for {
		if len(o.b) == cap(o.b) {
			if int64(len(o.b)) > limit {
				return &LimitError{What: "decompressed size", Limit: limit}
			}
			if err := o.grow(limit); err != nil {
				return err
			}
		}
		n, err := r.Read(o.b[len(o.b):cap(o.b)])
		o.b = o.b[:len(o.b)+n]
		if int64(len(o.b)) > limit {
			return &LimitError{What: "decompressed size", Limit: limit}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
