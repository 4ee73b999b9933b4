package modfile

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
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

// DefaultMaxSize bounds a decompressed module unless a Decompressor says
// otherwise; the largest in-tree modules are a few tens of MiB.
const DefaultMaxSize = 1 << 30

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

// Decompressor decompresses module files in memory with pure Go decoders.
// It is safe for concurrent use; share one per run.
type Decompressor struct {
	zstd    *zstd.Decoder
	maxSize int64
}

// NewDecompressor returns a Decompressor that refuses to produce more
// than maxSize bytes from one file (0 means DefaultMaxSize).
func NewDecompressor(maxSize int64) (*Decompressor, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(maxSize)), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, err
	}
	return &Decompressor{zstd: dec, maxSize: maxSize}, nil
}

// Close releases the decoders.
func (d *Decompressor) Close() { d.zstd.Close() }

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
	var out []byte
	var err error
	switch c {
	case None:
		return data, None, nil
	case Zstd:
		out, err = d.zstd.DecodeAll(data, dst[:0])
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || err == nil && int64(len(out)) > d.maxSize {
			err = fmt.Errorf("more than %d bytes", d.maxSize)
		}
	case XZ:
		var r *xz.Reader
		r, err = xz.NewReader(bytes.NewReader(data))
		if err == nil {
			out, err = readLimited(r, dst, d.maxSize)
		}
	case Gzip:
		var r *gzip.Reader
		r, err = gzip.NewReader(bytes.NewReader(data))
		if err == nil {
			out, err = readLimited(r, dst, d.maxSize)
		}
	}
	if err != nil {
		return nil, c, fmt.Errorf("%s data: %w", c, err)
	}
	return out, c, nil
}

// readLimited reads r whole into dst's storage, failing past max bytes.
func readLimited(r io.Reader, dst []byte, max int64) ([]byte, error) {
	buf := bytes.NewBuffer(dst[:0])
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, fmt.Errorf("more than %d bytes", max)
	}
	return buf.Bytes(), nil
}
