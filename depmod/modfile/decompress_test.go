package modfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/bombtest"
)

// TestLargeModules reads a 6 MiB module compressed every way, through a
// Parser and through Decompress. Where the headers declare the size (xz
// always, zstd when the frame says), the output is mapped at that size
// at once, so the heap holds none of it; and whatever the format, the
// Parser keeps at most 4 MiB of buffer for the next module.
func TestLargeModules(t *testing.T) {
	m := sample()
	m.Padding = 6 << 20
	want := m.Bytes()
	wantFile, err := Parse(want)
	require.NoError(t, err)
	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	defer enc.Close()
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	p := NewParser(dec)
	dir := t.TempDir()
	for _, v := range []struct {
		name     string
		data     []byte
		declared bool
	}{
		{"xz", compressWith(t, XZ, want), true},
		{"zstd-sized", enc.EncodeAll(want, nil), true},
		{"zstd-stream", compressWith(t, Zstd, want), false},
		{"gzip", compressWith(t, Gzip, want), false},
	} {
		t.Run(v.name, func(t *testing.T) {
			path := filepath.Join(dir, v.name+".ko")
			require.NoError(t, os.WriteFile(path, v.data, 0o644))
			_, err := p.ParseFile(path) // the first run fills the pools
			require.NoError(t, err)
			var f *File
			n := allocated(func() { f, err = p.ParseFile(path) })
			require.NoError(t, err)
			assert.Equal(t, wantFile, f)
			assert.LessOrEqual(t, cap(p.plain), heapOutput, "the buffer kept for the next module")
			if v.declared && !raceEnabled {
				assert.Less(t, n, uint64(1<<20), "allocated %d bytes: the output is not on the heap", n)
			}
			out, c, err := dec.Decompress(v.data)
			require.NoError(t, err)
			assert.NotEqual(t, None, c)
			assert.Equal(t, want, out)
		})
	}
}

// TestXZReaderPool checks that xz readers, with their dictionaries, serve
// file after file, except one that needed a dictionary over 8 MiB, which
// is let go rather than kept for the rest of the run.
func TestXZReaderPool(t *testing.T) {
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	small := bombtest.XZ(sample().Bytes())       // 1 MiB dictionary
	big := bombtest.XZDict(24, sample().Bytes()) // 16 MiB
	for _, data := range [][]byte{small, big} {
		out, _, err := dec.Decompress(data)
		require.NoError(t, err)
		require.Equal(t, sample().Bytes(), out)
	}
	// Under -race, the pool drops a quarter of the readers it is given.
	bound := uint64(3 << 20)
	if raceEnabled {
		bound = 9 << 20
	}
	n := allocated(func() {
		for range 10 {
			_, _, err = dec.Decompress(small)
		}
	})
	require.NoError(t, err)
	assert.Less(t, n, bound, "10 files with a 1 MiB dictionary allocated %d bytes", n)
	n = allocated(func() {
		for range 3 {
			_, _, err = dec.Decompress(big)
		}
	})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, uint64(3*16<<20), "each 16 MiB dictionary is new")
}

// xzDeclaring is an xz file whose LZMA2 chunk headers declare chunks×2
// MiB but whose chunks hold 16 zero bytes each: valid framing the walk
// accepts, with data that ends long before what it declares.
func xzDeclaring(chunks int) []byte {
	crc := func(b []byte) []byte { return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)) }
	// Stream header (no check), block header (LZMA2, 4 KiB dictionary).
	out := append([]byte("\xfd7zXZ\x00"), crc([]byte{0, 0})...)
	out = append(out, crc([]byte{2, 0, 0x21, 1, 0, 0, 0, 0})...)
	const unpacked, packed = 2 << 20, 16
	u := uint32(unpacked - 1)
	for i := range chunks {
		ctl := byte(0x80)
		if i == 0 {
			ctl = 0xe0 // dictionary reset, new properties
		}
		out = append(out, ctl|byte(u>>16), byte(u>>8), byte(u), 0, packed-1)
		if i == 0 {
			out = append(out, 0x5d) // lc=3 lp=0 pb=2
		}
		out = append(out, make([]byte, packed)...)
	}
	out = append(out, 0) // end of the LZMA2 data
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	// Index (one record), its CRC32, the stream footer.
	index := binary.AppendUvarint([]byte{0}, 1)
	index = binary.AppendUvarint(index, uint64(len(out)-12))
	index = binary.AppendUvarint(index, uint64(chunks)*unpacked)
	for len(index)%4 != 0 {
		index = append(index, 0)
	}
	out = append(out, crc(index)...)
	return append(out, make([]byte, 12)...)
}

// TestDeclaredOutputIsNotResident decodes an 8 KiB xz file whose chunks
// declare 500 MiB, under the 512 MiB limit: the output is mapped at the
// declared size, and the decoder fails on the data long before; the heap
// and the resident memory grow by far less than declared.
func TestDeclaredOutputIsNotResident(t *testing.T) {
	data := xzDeclaring(250)
	info, err := checkXZ(bytes.NewReader(data), int64(len(data)), DefaultMaxWindow, DefaultMaxSize)
	require.NoError(t, err)
	require.Equal(t, uint64(500<<20), info.size, "the walk adds up what the chunks declare")
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	var n uint64
	rss, ok := bombtest.PeakRSS(func() { n = allocated(func() { _, _, err = dec.Decompress(data) }) })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "xz data: ")
	var le *LimitError
	assert.False(t, errors.As(err, &le), "a data error, not a limit: %v", err)
	assert.Less(t, n, uint64(4<<20), "allocated %d bytes", n)
	if ok {
		assert.Less(t, rss, uint64(32<<20), "peak RSS grew by %d bytes", rss)
	}
}
