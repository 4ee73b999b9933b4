package index

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "\n", "", "\t", "").Replace(s))
	require.NoError(t, err)
	return b
}

// The byte-exact examples of the reference, verified on kmod 30.
func TestBuilderWorkedExamples(t *testing.T) {
	var empty Builder
	assert.Equal(t, unhex(t, "b007f457 00020001 0000000c"), empty.Bytes(), "an empty index is 12 bytes")

	var dep Builder
	require.NoError(t, dep.Add("x", "kernel/x.ko:", 0))
	assert.Equal(t, unhex(t, `b007f457 00020001 20000021
		00000001 00000000`+hex.EncodeToString([]byte("kernel/x.ko:"))+`00
		78 78 4000000c`), dep.Bytes())

	var sym Builder
	require.NoError(t, sym.Add("symbol:sx", "x", 0))
	assert.Equal(t, unhex(t, `b007f457 00020001 2000001f`+
		hex.EncodeToString([]byte("ymbol:sx"))+`00 00000001 00000000 78 00
		73 73 c000000c`), sym.Bytes())
}

func TestBuilderCanonical(t *testing.T) {
	keys := []string{"abc", "abd", "ab", "b", "abcdef", "", "xyz", "xy"}
	var fwd, rev Builder
	for i, k := range keys {
		require.NoError(t, fwd.Add(k, "v"+k, uint32(i)))
	}
	for i := len(keys) - 1; i >= 0; i-- {
		require.NoError(t, rev.Add(keys[i], "v"+keys[i], uint32(i)))
	}
	assert.Equal(t, fwd.Bytes(), rev.Bytes(), "the tree depends only on the keys")
	assert.Equal(t, len(keys), fwd.Len())
}

func TestBuilderValueOrder(t *testing.T) {
	var b Builder
	for _, v := range []string{"zz", "aa", "mm"} {
		require.NoError(t, b.Add("shared", v, 0))
	}
	require.NoError(t, b.Add("shared", "low", 0))
	require.NoError(t, b.Add("shared", "high", 9))
	require.NoError(t, b.Add("shared", "mid", 5))
	require.NoError(t, b.Add("shared", "aa", 0))
	r, err := NewReader(b.Bytes())
	require.NoError(t, err)
	vals, err := r.Values("shared")
	require.NoError(t, err)
	var got []string
	for _, v := range vals {
		got = append(got, v.Value)
	}
	assert.Equal(t, []string{"aa", "low", "mm", "aa", "zz", "mid", "high"}, got,
		"equal priorities in reverse insertion order, duplicates kept")
}

func TestBuilderRejectsNonASCII(t *testing.T) {
	var b Builder
	assert.ErrorContains(t, b.Add("caf\xc3\xa9", "x", 0), "bad character 0xc3")
	assert.ErrorContains(t, b.Add("x", "\xff", 0), "index value")
	assert.Equal(t, 0, b.Len())
	assert.True(t, bytes.Equal((&Builder{}).Bytes(), b.Bytes()))
}
