package modfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/bombtest"
)

// allocated returns the bytes fn allocates on the heap.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// limitErr asserts that err is a *LimitError about what, wrapping EFBIG.
func limitErr(t *testing.T, err error, what string) *LimitError {
	t.Helper()
	var le *LimitError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, what, le.What, "%v", err)
	assert.ErrorIs(t, err, syscall.EFBIG)
	assert.Contains(t, err.Error(), "is over the limit of")
	return le
}

// bombs are the hostile files each limit must refuse, with the limit
// named in the error, for a Decompressor with the default limits.
func bombs() []struct {
	name, what string
	data       []byte
} {
	payload := sample().Bytes()
	return []struct {
		name, what string
		data       []byte
	}{
		// zstd: a 2 GiB window; a 3 GiB single-segment frame; a 256 MiB
		// one (under the size limit, over the window limit); a good
		// frame followed by one with a 1 TiB window.
		{"window.ko.zst", "window", bombtest.ZstdWindow(31, payload)},
		{"frame.ko.zst", "frame size", bombtest.ZstdFrameSize(3<<30, payload)},
		{"frame256.ko.zst", "window", bombtest.ZstdFrameSize(256<<20, payload)},
		{"second-frame.ko.zst", "window", append(bombtest.ZstdWindow(20, payload), bombtest.ZstdWindow(40, payload)...)},
		// xz: a 4 GiB dictionary; 1.5 GiB in a second stream.
		{"dict.ko.xz", "dictionary", bombtest.XZDict(40, payload)},
		{"second-stream.ko.xz", "dictionary", append(bombtest.XZ(payload), bombtest.XZDict(37, payload)...)},
		// Output bombs: 1 GiB from 32 KiB (zstd RLE blocks) and from 1
		// MiB (gzip).
		{"rle.ko.zst", "decompressed size", bombtest.ZstdRLE(1 << 30)},
	}
}

// TestDecompressBombs decompresses each bomb with the default limits and
// checks that it is refused, naming the limit, having allocated far less
// than the bomb asks for: nothing a header declares is allocated before
// the check.
func TestDecompressBombs(t *testing.T) {
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	for _, b := range bombs() {
		if b.what == "decompressed size" {
			continue // TestOutputBombs, with a smaller limit
		}
		t.Run(b.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, _, err = dec.Decompress(b.data) })
			limitErr(t, err, b.what)
			assert.Less(t, n, uint64(16<<20), "allocated %d bytes", n)
		})
	}
	// The same files are fine under limits they fit.
	big, err := NewDecompressor(WithMaxSize(4<<30), WithMaxWindow(4<<30))
	require.NoError(t, err)
	defer big.Close()
	out, _, err := big.Decompress(bombtest.ZstdFrameSize(uint64(len(sample().Bytes())), sample().Bytes()))
	require.NoError(t, err)
	assert.Equal(t, sample().Bytes(), out)
}

// TestOutputBombs expands small files past a 128 MiB limit and checks
// that decompression stops at the limit: the heap holds at most the
// 2×4 MiB the output used while it grew on the heap and the decoder's
// tables and window (16 MiB), and the peak resident memory (mapped output
// included) at most that plus the limit.
func TestOutputBombs(t *testing.T) {
	const limit = 128 << 20
	const heap = 2*heapOutput + 16<<20
	dec, err := NewDecompressor(WithMaxSize(limit))
	require.NoError(t, err)
	defer dec.Close()
	for name, data := range map[string][]byte{
		"zstd": bombtest.ZstdRLE(1 << 30),
		"gzip": bombtest.GzipZeros(256 << 20),
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			var n uint64
			rss, ok := bombtest.PeakRSS(func() { n = allocated(func() { _, _, err = dec.Decompress(data) }) })
			le := limitErr(t, err, "decompressed size")
			assert.Equal(t, int64(limit), le.Limit)
			assert.Less(t, n, uint64(heap), "allocated %d bytes for %d compressed", n, len(data))
			if ok {
				assert.Less(t, rss, uint64(limit+heap), "peak RSS grew by %d bytes", rss)
				assert.Greater(t, rss, uint64(limit/2), "the output was touched, so the measure is real")
			}
		})
	}
	// xz is refused from its chunk headers, before any decoding.
	data := bombtest.XZZeros(256 << 20)
	var err2 error
	n := allocated(func() { _, _, err2 = dec.Decompress(data) })
	le := limitErr(t, err2, "decompressed size")
	assert.Greater(t, le.Size, uint64(limit))
	assert.Less(t, n, uint64(1<<20), "allocated %d bytes for %d compressed", n, len(data))
}

// TestSparseAndOversizedFiles checks that files are refused by the size
// they have, not read: a 6 GiB sparse .ko.gz at once, a 100 MiB sparse
// .ko.zst as soon as its decoder meets the hole.
func TestSparseAndOversizedFiles(t *testing.T) {
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	p := NewParser(dec)
	dir := t.TempDir()

	huge := filepath.Join(dir, "huge.ko.gz")
	bombtest.Sparse(t, huge, 6<<30, bombtest.GzipZeros(1<<10))
	var perr, rerr error
	n := allocated(func() {
		_, perr = p.ParseFile(huge)
		_, _, rerr = dec.ReadFile(huge)
	})
	for _, err := range []error{perr, rerr} {
		le := limitErr(t, err, "file size")
		assert.Equal(t, uint64(6<<30), le.Size)
		assert.Contains(t, err.Error(), "6442450944 bytes (6.0 GiB) is over the limit of 536870912 bytes (512.0 MiB)")
	}
	assert.Less(t, n, uint64(1<<20))

	plain := filepath.Join(dir, "huge.ko")
	bombtest.Sparse(t, plain, 2<<30, sample().Bytes())
	_, err = p.ParseFile(plain)
	limitErr(t, err, "file size")

	holey := filepath.Join(dir, "holey.ko.zst")
	head := bombtest.ZstdWindow(20, sample().Bytes())
	bombtest.Sparse(t, holey, 100<<20, head[:len(head)-10])
	n = allocated(func() { _, perr = p.ParseFile(holey) })
	require.Error(t, perr)
	assert.Contains(t, perr.Error(), "zstd data")
	assert.Less(t, n, uint64(16<<20), "the hole is not read")

	fifo := filepath.Join(dir, "fifo.ko")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	_, err = p.ParseFile(fifo)
	assert.ErrorIs(t, err, syscall.EINVAL, "a FIFO is refused without blocking")
	_, _, err = dec.ReadFile(fifo)
	assert.ErrorIs(t, err, syscall.EINVAL)
}

// TestReadFile reads modules whole as the loader does.
func TestReadFile(t *testing.T) {
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	dir := t.TempDir()
	want := sample().Bytes()
	for _, c := range []Compression{None, Zstd, XZ, Gzip} {
		path := filepath.Join(dir, "m-"+c.String()+".ko")
		require.NoError(t, os.WriteFile(path, compressWith(t, c, want), 0o644))
		got, gotC, err := dec.ReadFile(path)
		require.NoError(t, err, c.String())
		assert.Equal(t, c, gotC)
		assert.Equal(t, want, got, c.String())
	}
	bomb := filepath.Join(dir, "bomb.ko.xz")
	require.NoError(t, os.WriteFile(bomb, bombtest.XZDict(40, want), 0o644))
	_, _, err = dec.ReadFile(bomb)
	limitErr(t, err, "dictionary")
}

// TestBombsUnderMemoryLimit parses every bomb, as depmod does, in a child
// process limited to 2.25 GiB of address space (ulimit -v; the Go runtime
// reserves about 1.2 GiB of it at start) with GOMEMLIMIT
// set, and checks that each ends in an error naming the file and the
// limit, not in "fatal error: out of memory". Before the limits, the zstd
// bombs took 2.8 GiB and the xz ones 4.2 GiB.
func TestBombsUnderMemoryLimit(t *testing.T) {
	if bombtest.Child("modfile") {
		dec, err := NewDecompressor()
		if err != nil {
			t.Fatal(err)
		}
		p := NewParser(dec)
		dir := t.TempDir()
		for _, b := range bombs() {
			path := filepath.Join(dir, b.name)
			if err := os.WriteFile(path, b.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := p.ParseFile(path)
			fmt.Printf("RESULT %s: %v\n", b.name, err)
		}
		sparse := filepath.Join(dir, "sparse.ko.gz")
		bombtest.Sparse(t, sparse, 6<<30, bombtest.GzipZeros(1<<10))
		_, err = p.ParseFile(sparse)
		fmt.Printf("RESULT sparse.ko.gz: %v\n", err)
		return
	}
	out, err := bombtest.Limited(t, "TestBombsUnderMemoryLimit", "modfile", 2304<<20)
	require.NoError(t, err, "%s", out)
	for _, b := range append(bombs(), struct {
		name, what string
		data       []byte
	}{"sparse.ko.gz", "file size", nil}) {
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "RESULT "+b.name+": ") {
				line = l
			}
		}
		assert.Contains(t, line, b.what+" ", "%s in:\n%s", b.name, out)
		assert.Contains(t, line, "is over the limit of", b.name)
	}
}

// TestLimitErrorMessage checks the text users read.
func TestLimitErrorMessage(t *testing.T) {
	err := fmt.Errorf("zstd data: %w", &LimitError{What: "window", Size: 2 << 30, Limit: DefaultMaxWindow})
	assert.EqualError(t, err, "zstd data: window of 2147483648 bytes (2.0 GiB) is over the limit of 134217728 bytes (128.0 MiB)")
	assert.True(t, errors.Is(err, syscall.EFBIG))
	assert.EqualError(t, &LimitError{What: "decompressed size", Limit: 1000}, "decompressed size is over the limit of 1000 bytes")
	assert.True(t, bytes.HasPrefix(bombtest.ZstdRLE(1), []byte{0x28, 0xb5, 0x2f, 0xfd}))
}

// TestNewDecompressorRefusesBadLimits: a limit that is not positive is
// refused by NewDecompressor, naming the option; the defaults are the
// documented ones.
func TestNewDecompressorRefusesBadLimits(t *testing.T) {
	_, err := NewDecompressor(WithMaxSize(0))
	assert.ErrorContains(t, err, "WithMaxSize(0): the size limit must be positive")
	_, err = NewDecompressor(WithMaxWindow(-1))
	assert.ErrorContains(t, err, "WithMaxWindow(-1): the window limit must be positive")
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	assert.EqualValues(t, DefaultMaxSize, dec.MaxSize())
	assert.EqualValues(t, DefaultMaxWindow, dec.MaxWindow())
}
