// Package bombtest makes hostile compressed files for tests (headers that
// declare huge windows, dictionaries or sizes, and small files that expand
// to large ones) and runs a test function in a child process under an
// address-space limit, so a test can show that a bomb ends in an error and
// not in "fatal error: out of memory".
package bombtest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// ZstdWindow is a valid zstd frame whose header declares a window of
// 2^log bytes (10 <= log <= 41) and whose one raw block holds payload.
func ZstdWindow(log uint, payload []byte) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(log-10) << 3}
	return zstdRaw(b, payload, true)
}

// ZstdFrameSize is a zstd frame whose single-segment header declares a
// content size of n bytes (so its window is n too), holding payload.
func ZstdFrameSize(n uint64, payload []byte) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0} // single segment, 8-byte content size
	b = binary.LittleEndian.AppendUint64(b, n)
	return zstdRaw(b, payload, true)
}

// zstdRaw appends payload as one raw block.
func zstdRaw(b, payload []byte, last bool) []byte {
	h := uint32(len(payload)) << 3
	if last {
		h |= 1
	}
	b = append(b, byte(h), byte(h>>8), byte(h>>16))
	return append(b, payload...)
}

// ZstdRLE is a zstd frame (8 MiB window, no declared size) of RLE blocks
// that expands to n zero bytes from 4 bytes per 128 KiB.
func ZstdRLE(n int64) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (23 - 10) << 3}
	const block = 128 << 10
	for n > 0 {
		size := min(n, block)
		n -= size
		h := uint32(size)<<3 | 1<<1 // RLE
		if n == 0 {
			h |= 1
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return b
}

// XZDict is a valid xz file holding payload whose block header declares an
// LZMA2 dictionary of property prop (40: 4 GiB - 1; 39: 3 GiB; 37: 1.5
// GiB), with the header's CRC32 fixed, so only the dictionary is wrong.
func XZDict(prop byte, payload []byte) []byte {
	data := XZ(payload)
	// Stream header (12 bytes), then the block header: size byte, flags,
	// filter ID 0x21, properties size 1, the dictionary property.
	hsize := (int(data[12]) + 1) * 4
	hdr := data[12 : 12+hsize]
	i := bytes.Index(hdr, []byte{0x21, 0x01})
	if i < 0 {
		panic("bombtest: no LZMA2 filter in the block header")
	}
	hdr[i+2] = prop
	binary.LittleEndian.PutUint32(hdr[hsize-4:], crc32.ChecksumIEEE(hdr[:hsize-4]))
	return data
}

// XZ compresses data with xz.
func XZ(data []byte) []byte {
	var b bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 1 << 20}.NewWriter(&b)
	if err != nil {
		panic(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// zerosUnit is the most zero bytes one xz stream or gzip member of
// XZZeros and GzipZeros holds: larger files repeat that unit, so a bomb of
// hundreds of MiB costs one small compression (xz compresses 256 MiB in
// over a minute under the race detector; a 4 MiB unit in about a second).
const zerosUnit = 4 << 20

// repeatZeros is n zero bytes compressed by compress, as the concatenation
// of compressed units of at most zerosUnit bytes: a valid file for formats
// whose readers decode one stream or member after another (xz, gzip).
func repeatZeros(n int64, compress func(n int64) []byte) []byte {
	if n <= zerosUnit {
		return compress(n)
	}
	unit := compress(zerosUnit)
	out := bytes.Repeat(unit, int(n/zerosUnit))
	if rest := n % zerosUnit; rest > 0 {
		out = append(out, compress(rest)...)
	}
	return out
}

// XZZeros is an xz file of n zero bytes: streams of at most 4 MiB each,
// concatenated as the xz format allows.
func XZZeros(n int64) []byte {
	return repeatZeros(n, func(n int64) []byte {
		var b bytes.Buffer
		w, err := xz.WriterConfig{DictCap: 1 << 20}.NewWriter(&b)
		if err != nil {
			panic(err)
		}
		io.Copy(w, io.LimitReader(Zeros{}, n))
		if err := w.Close(); err != nil {
			panic(err)
		}
		return b.Bytes()
	})
}

// GzipZeros is a gzip file of n zero bytes (about n/800 bytes long):
// members of at most 4 MiB each, concatenated as gzip allows.
func GzipZeros(n int64) []byte {
	return repeatZeros(n, func(n int64) []byte {
		var b bytes.Buffer
		w, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
		io.Copy(w, io.LimitReader(Zeros{}, n))
		w.Close()
		return b.Bytes()
	})
}

// Zeros reads zero bytes forever.
type Zeros struct{}

// Read fills p with zeros.
func (Zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Sparse writes a file of size bytes that starts with head and is a hole
// after it.
func Sparse(t testing.TB, path string, size int64, head []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(head); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// childEnv names the test a child process runs.
const childEnv = "KMMKIT_BOMBTEST_CHILD"

// Child reports whether this process is the child Limited started for
// name; the test then runs the bomb and prints its outcome.
func Child(name string) bool { return os.Getenv(childEnv) == name }

// Limited runs the test named test of the current test binary in a child
// process whose address space is limited to limit bytes (ulimit -v) and
// whose Go heap target is limit/2 (GOMEMLIMIT), with the child environment
// set to name so the test runs its bomb (see Child). It returns the
// child's combined output and its error. Under the race detector, whose
// shadow memory needs terabytes of address space, the child is a copy of
// the test binary built without it.
func Limited(t *testing.T, test, name string, limit int64) (string, error) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if raceEnabled {
		bin = filepath.Join(t.TempDir(), "norace.test")
		build := exec.Command("go", "test", "-c", "-o", bin, ".")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building the test binary without -race: %v\n%s", err, out)
		}
	}
	script := "ulimit -v " + strconv.FormatInt(limit/1024, 10) + ` && exec "$0" "$@"`
	cmd := exec.Command("sh", "-c", script, bin, "-test.run", "^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+name, "GOMEMLIMIT="+strconv.FormatInt(limit/2, 10))
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "fatal error: out of memory") || strings.Contains(string(out), "runtime: out of memory") {
		t.Fatalf("the child ran out of memory under a %d MiB limit:\n%s", limit>>20, out)
	}
	return string(out), err
}

// PeakRSS runs fn and returns how far the process's peak resident set
// (VmHWM, reset first through /proc/self/clear_refs) rose above its
// resident set before fn: the memory fn really touched, heap or mapped.
// ok is false where Linux's /proc does not tell, and under the race
// detector, whose shadow memory grows with every byte touched.
func PeakRSS(fn func()) (grew uint64, ok bool) {
	if raceEnabled || os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) != nil {
		fn()
		return 0, false
	}
	before, ok1 := statusKiB("VmRSS")
	fn()
	after, ok2 := statusKiB("VmHWM")
	if !ok1 || !ok2 {
		return 0, false
	}
	if after < before {
		return 0, true
	}
	return (after - before) << 10, true
}

// statusKiB reads a "Name: N kB" line of /proc/self/status.
func statusKiB(name string) (uint64, bool) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
