package modfile

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"

	"github.com/kmmkit/kmmkit/internal/bombtest"
	"github.com/kmmkit/kmmkit/internal/elftest"
)

func sample() elftest.Module {
	return elftest.Module{
		Modinfo: []string{"license=GPL", "alias=pci:v*d*", "alias", "softdep=pre: a", "vermagic=6.1.0-56-amd64 SMP mod_unload", "empty="},
		Exports: []elftest.Export{{Name: "exp_a", CRC: 0xaabbccdd}, {Name: "exp_b", CRC: 7}},
		Needs:   []elftest.Need{{Name: "printk"}, {Name: "weak_sym", Weak: true}, {Name: "printk"}},
		Versions: []elftest.Version{
			{Name: "module_layout", CRC: 0x1111}, {Name: "printk", CRC: 0x2222}, {Name: "unused", CRC: 0x3333},
		},
	}
}

func TestParseAllClassesAndOrders(t *testing.T) {
	for _, v := range []struct {
		is32, be bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		m := sample()
		m.Is32, m.BigEndian = v.is32, v.be
		f, err := Parse(m.Bytes())
		require.NoError(t, err, "%+v", v)
		assert.True(t, f.HasModinfo)
		assert.Equal(t, []KV{
			{"license", "GPL"}, {"alias", "pci:v*d*"}, {"alias", ""}, {"softdep", "pre: a"},
			{"vermagic", "6.1.0-56-amd64 SMP mod_unload"}, {"empty", ""},
		}, f.Info)
		assert.Equal(t, []string{"pci:v*d*", ""}, f.Values("alias"))
		assert.Equal(t, []Symbol{{Name: "exp_a", CRC: 0xaabbccdd}, {Name: "exp_b", CRC: 7}}, f.Exports)
		assert.Equal(t, []Symbol{
			{Name: "printk", CRC: 0x2222},
			{Name: "weak_sym", Weak: true},
			{Name: "printk", CRC: 0x2222},
			{Name: "module_layout", CRC: 0x1111},
			{Name: "unused", CRC: 0x3333},
		}, f.Needs, "undefined symbols in table order, then unused __versions")
	}
}

func TestParseFallbacks(t *testing.T) {
	abs := elftest.Module{Exports: []elftest.Export{{Name: "a", CRC: 42}}, AbsCRCs: true}
	f, err := Parse(abs.Bytes())
	require.NoError(t, err)
	assert.Equal(t, []Symbol{{Name: "a", CRC: 42}}, f.Exports)

	strs := elftest.Module{KsymtabStrings: []string{"ns_sym", "MY_NAMESPACE"}}
	f, err = Parse(strs.Bytes())
	require.NoError(t, err)
	assert.Equal(t, []Symbol{{Name: "ns_sym"}, {Name: "MY_NAMESPACE"}}, f.Exports, "no __crc_ symbols: __ksymtab_strings")
	assert.False(t, f.HasModinfo == false && f.Info != nil)

	nosym := elftest.Module{NoSymtab: true, KsymtabStrings: []string{"x"}, Needs: []elftest.Need{{Name: "y"}}, NoModinfo: true}
	f, err = Parse(nosym.Bytes())
	require.NoError(t, err)
	assert.Equal(t, []Symbol{{Name: "x"}}, f.Exports)
	assert.Nil(t, f.Needs, "no symbol table: nothing needed")
	assert.False(t, f.HasModinfo)
}

func TestParseErrors(t *testing.T) {
	good := sample().Bytes()
	mutate := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	tests := []struct {
		name  string
		data  []byte
		errno syscall.Errno
		msg   string
	}{
		{"not elf", []byte("#!/bin/sh\necho this is not a module\n"), syscall.ENOEXEC, "not an ELF file"},
		{"tiny", []byte("\x7fELF"), syscall.ENOEXEC, "not an ELF file"},
		{"short header", good[:40], syscall.EINVAL, "too short for an ELF64 header"},
		{"bad class", mutate(func(b []byte) []byte { b[4] = 9; return b }), syscall.EINVAL, "unknown ELF class 9"},
		{"bad data", mutate(func(b []byte) []byte { b[5] = 0; return b }), syscall.EINVAL, "unknown ELF data encoding"},
		{"bad shentsize", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[0x3a:], 40); return b }), syscall.EINVAL, "section header size 40"},
		{"truncated", good[:len(good)-100], syscall.EINVAL, "go past the end"},
		{"shstrndx out of range", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[0x3e:], 999); return b }), syscall.EINVAL, "section name table index 999"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			require.Error(t, err)
			assert.True(t, errors.Is(err, tc.errno), "want errno %v in %v", tc.errno, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func compressWith(t *testing.T, c Compression, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch c {
	case Zstd:
		w, err := zstd.NewWriter(&b)
		require.NoError(t, err)
		w.Write(data)
		require.NoError(t, w.Close())
	case XZ:
		w, err := xz.NewWriter(&b)
		require.NoError(t, err)
		w.Write(data)
		require.NoError(t, w.Close())
	case Gzip:
		w := gzip.NewWriter(&b)
		w.Write(data)
		require.NoError(t, w.Close())
	default:
		return data
	}
	return b.Bytes()
}

func TestParserFiles(t *testing.T) {
	dec, err := NewDecompressor()
	require.NoError(t, err)
	defer dec.Close()
	p := NewParser(dec)
	dir := t.TempDir()
	want, err := Parse(sample().Bytes())
	require.NoError(t, err)
	for _, c := range []Compression{None, Zstd, XZ, Gzip} {
		path := filepath.Join(dir, "m-"+c.String()+".ko")
		require.NoError(t, os.WriteFile(path, compressWith(t, c, sample().Bytes()), 0o644))
		got, err := p.ParseFile(path)
		require.NoError(t, err, c.String())
		assert.Equal(t, want, got, c.String())
	}

	big := sample()
	big.Padding = 3 << 20 // past the reused buffer: a fresh mapping
	path := filepath.Join(dir, "big.ko")
	require.NoError(t, os.WriteFile(path, big.Bytes(), 0o644))
	got, err := p.ParseFile(path)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	got, err = p.ParseFile(filepath.Join(dir, "m-none.ko"))
	require.NoError(t, err, "a small file after a big one")
	assert.Equal(t, want, got)

	p.KeepInfo = func(k string) bool { return k == "alias" }
	got, err = p.ParseFile(path)
	require.NoError(t, err)
	assert.Equal(t, []KV{{"alias", "pci:v*d*"}, {"alias", ""}}, got.Info)

	short := filepath.Join(dir, "short.ko")
	require.NoError(t, os.WriteFile(short, []byte("abc"), 0o644))
	_, err = p.ParseFile(short)
	assert.ErrorIs(t, err, syscall.EINVAL)
	_, err = p.ParseFile(filepath.Join(dir, "missing.ko"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	corrupt := filepath.Join(dir, "corrupt.ko")
	require.NoError(t, os.WriteFile(corrupt, []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2, 3, 4}, 0o644))
	_, err = p.ParseFile(corrupt)
	assert.ErrorContains(t, err, "xz data")
}

func TestDecompressLimit(t *testing.T) {
	dec, err := NewDecompressor(WithMaxSize(1000))
	require.NoError(t, err)
	defer dec.Close()
	data := make([]byte, 5000)
	for _, c := range []Compression{Zstd, XZ, Gzip} {
		_, got, err := dec.Decompress(compressWith(t, c, data))
		assert.Equal(t, c, got)
		var le *LimitError
		assert.ErrorAs(t, err, &le, c.String())
		assert.ErrorContains(t, err, "is over the limit of", c.String())
	}
	out, c, err := dec.Decompress(data)
	require.NoError(t, err)
	assert.Equal(t, None, c)
	assert.Len(t, out, 5000)
}

func FuzzParse(f *testing.F) {
	f.Add(sample().Bytes())
	m := sample()
	m.Is32, m.BigEndian = true, true
	f.Add(m.Bytes())
	f.Add(elftest.Module{KsymtabStrings: []string{"a"}, NoSymtab: true}.Bytes())
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOEXEC) {
				t.Fatalf("error without errno: %v", err)
			}
			return
		}
		if _, err := ParseInfo(data); err != nil {
			t.Fatalf("Parse succeeded but ParseInfo failed: %v", err)
		}
		_ = file.Values("alias")
	})
}

// FuzzDecompress checks the bounds on any input: output at most the 1 MiB
// limit, a limit failure reported as a *LimitError, and heap allocation at
// most a few times the limits, whatever the headers declare.
func FuzzDecompress(f *testing.F) {
	const limit = 1 << 20
	dec, err := NewDecompressor(WithMaxSize(limit), WithMaxWindow(limit))
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	for _, c := range []Compression{Zstd, XZ, Gzip} {
		var b bytes.Buffer
		switch c {
		case Zstd:
			w, _ := zstd.NewWriter(&b)
			w.Write(sample().Bytes())
			w.Close()
		case XZ:
			w, _ := xz.NewWriter(&b)
			w.Write(sample().Bytes())
			w.Close()
		case Gzip:
			w := gzip.NewWriter(&b)
			w.Write(sample().Bytes())
			w.Close()
		}
		f.Add(b.Bytes())
	}
	f.Add(bombtest.ZstdWindow(31, sample().Bytes()))
	f.Add(bombtest.ZstdFrameSize(3<<30, sample().Bytes()))
	f.Add(bombtest.ZstdRLE(4 << 20))
	f.Add(bombtest.XZDict(40, sample().Bytes()))
	f.Add(bombtest.GzipZeros(4 << 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out []byte
		var err error
		n := allocated(func() { out, _, err = dec.Decompress(data) })
		// Output and its heap copy, the decoders' windows and tables.
		if bound := uint64(4*limit + 2*limit + 8<<20 + 8*len(data)); n > bound {
			t.Fatalf("allocated %d bytes, bound %d", n, bound)
		}
		if err != nil {
			var le *LimitError
			if errors.Is(err, syscall.EFBIG) && !errors.As(err, &le) {
				t.Fatalf("EFBIG without a LimitError: %v", err)
			}
			return
		}
		if len(out) > limit {
			t.Fatalf("%d bytes past the limit", len(out))
		}
		_, _ = Parse(out)
	})
}
