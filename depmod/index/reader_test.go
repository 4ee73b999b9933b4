package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFnmatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"", "", true},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"a*", "a", true},
		{"a*", "abc/def", true},
		{"*", ".hidden", true},
		{"*c", "abc", true},
		{"a*c", "ac", true},
		{"a*c", "abcd", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"pci:v*d*sv*sd*bc*sc*i*", "pci:v00008086d00001234sv0sd0bc02sc00i00", true},
		{"usb:v1234p*", "usb:v1235p0001", false},
		{"[abc]x", "bx", true},
		{"[abc]x", "dx", false},
		{"[a-c]", "b", true},
		{"[!a-c]", "b", false},
		{"[^a-c]", "d", true},
		{"[]a]", "]", true},
		{"[a-]", "-", true},
		{"[[:digit:]]*", "7up", true},
		{"[[:alpha:]]", "7", false},
		{"[[:xdigit:]][[:upper:]]", "fZ", true},
		{"a[", "a[", true},
		{"a[b", "a[b", true},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{`a\`, `a\`, true},
		{"**x", "yyx", true},
		{"*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, fnmatch(tc.pattern, tc.name), "fnmatch(%q, %q)", tc.pattern, tc.name)
	}
}

func TestReaderLookup(t *testing.T) {
	var b Builder
	keys := map[string]string{"x": "kernel/x.ko:", "xy": "kernel/xy.ko: kernel/x.ko", "abc": "a", "ab": "b", "": "root"}
	i := uint32(0)
	for k, v := range keys {
		require.NoError(t, b.Add(k, v, i))
		i++
	}
	require.NoError(t, b.Add("x", "later", 99))
	r, err := NewReader(b.Bytes())
	require.NoError(t, err)
	for k, v := range keys {
		got, ok, err := r.Lookup(k)
		require.NoError(t, err)
		assert.True(t, ok, k)
		assert.Equal(t, v, got, k)
	}
	vals, err := r.Values("x")
	require.NoError(t, err)
	assert.Len(t, vals, 2)
	for _, miss := range []string{"a", "abcd", "y", "xyz", "b"} {
		_, ok, err := r.Lookup(miss)
		require.NoError(t, err)
		assert.False(t, ok, miss)
	}
	var walked []string
	require.NoError(t, r.Walk(func(k string, _ []Value) error { walked = append(walked, k); return nil }))
	assert.Equal(t, []string{"", "ab", "abc", "x", "xy"}, walked)
}

// TestReaderMatchAgainstBruteForce stores random patterns and checks that
// Match returns exactly the values of every pattern fnmatch accepts, in
// priority order.
func TestReaderMatchAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	alphabet := "ab-_:*?[]"
	randStr := func(n int, wild bool) string {
		b := make([]byte, n)
		for i := range b {
			if wild {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = alphabet[rng.IntN(4)]
			}
		}
		return string(b)
	}
	for round := range 20 {
		var b Builder
		type entry struct {
			key string
			val Value
			seq int
		}
		var entries []entry
		for i := range 60 {
			k := randStr(rng.IntN(6), true)
			v := Value{Priority: uint32(rng.IntN(5)), Value: fmt.Sprintf("m%d", i)}
			require.NoError(t, b.Add(k, v.Value, v.Priority))
			entries = append(entries, entry{k, v, i})
		}
		r, err := NewReader(b.Bytes())
		require.NoError(t, err)
		for q := range 40 {
			query := randStr(rng.IntN(7), false)
			var want []string
			for _, e := range entries {
				if fnmatch(e.key, query) {
					want = append(want, e.val.Value)
				}
			}
			got, err := r.Match(query)
			require.NoError(t, err)
			var gotVals []string
			for i, v := range got {
				gotVals = append(gotVals, v.Value)
				if i > 0 {
					assert.LessOrEqual(t, got[i-1].Priority, v.Priority, "sorted by priority")
				}
			}
			sort.Strings(want)
			sort.Strings(gotVals)
			assert.Equal(t, want, gotVals, "round %d query %d %q", round, q, query)
		}
	}
}

func TestReaderCorrupt(t *testing.T) {
	var b Builder
	require.NoError(t, b.Add("abc", "v", 0))
	require.NoError(t, b.Add("abd", "w", 1))
	good := b.Bytes()
	cases := map[string][]byte{
		"empty":     {},
		"short":     good[:8],
		"magic":     append([]byte{1, 2, 3, 4}, good[4:]...),
		"version":   append(append([]byte{}, good[:4]...), append([]byte{0, 3, 0, 0}, good[8:]...)...),
		"truncated": good[:len(good)-3],
	}
	for name, data := range cases {
		r, err := NewReader(data)
		if err != nil {
			assert.ErrorIs(t, err, ErrCorrupt, name)
			continue
		}
		_, _, err = r.Lookup("abc")
		assert.ErrorIs(t, err, ErrCorrupt, name)
	}
	// A child pointing back at its parent must not loop.
	loop := append([]byte(nil), good[:12]...)
	off := len(loop)
	loop = append(loop, 'a', 'a', 0, 0, 0, 0)
	ref := uint32(off) | flagChildren
	loop[off+2], loop[off+3], loop[off+4], loop[off+5] = byte(ref>>24), byte(ref>>16), byte(ref>>8), byte(ref)
	loop[8], loop[9], loop[10], loop[11] = byte(ref>>24), byte(ref>>16), byte(ref>>8), byte(ref)
	r, err := NewReader(loop)
	require.NoError(t, err)
	_, err = r.Match("aaaa*")
	require.NoError(t, err, "a finite query walks a finite path")
	err = r.Walk(func(string, []Value) error { return nil })
	assert.ErrorIs(t, err, ErrCorrupt)
	_, err = r.Match("*")
	if err != nil {
		assert.ErrorIs(t, err, ErrCorrupt)
	}
}

// FuzzReader checks that no file makes a lookup panic, loop or run past
// its budget, that every failure is ErrCorrupt, and that on a file Walk
// can read (a true trie) Match returns exactly the values of the keys
// fnmatch accepts, by priority.
func FuzzReader(f *testing.F) {
	var b Builder
	for i, k := range []string{"pci:v*d*", "usb:v1234p*", "symbol:foo", "x", "", "[ab]c?"} {
		_ = b.Add(k, fmt.Sprint("m", i), uint32(i))
	}
	f.Add(b.Bytes(), "pci:v1d2")
	f.Add(b.Bytes(), "usb:v1234p0")
	f.Add([]byte{0xb0, 0x07, 0xf4, 0x57, 0, 2, 0, 1, 0, 0, 0, 12}, "")
	f.Add(rawIndex([]rawNode{{first: '*', children: []int{1}}, {first: 'a', children: []int{1, 1}, values: []Value{{0, "v"}}}}), "aaaa")
	f.Fuzz(func(t *testing.T, data []byte, query string) {
		r, err := NewReader(data)
		if err != nil {
			return
		}
		corrupt := func(err error) {
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error without ErrCorrupt: %v", err)
			}
		}
		_, _, err = r.Lookup(query)
		corrupt(err)
		_, err = r.Values(query)
		corrupt(err)
		got, steps, err := r.match(query)
		corrupt(err)
		if budget := MatchSteps(len(data), len(query)); steps > budget+2<<16+2 {
			t.Fatalf("%d steps, budget %d", steps, budget)
		}
		for i := 1; i < len(got); i++ {
			if got[i-1].Priority > got[i].Priority {
				t.Fatalf("not sorted by priority: %v", got)
			}
		}
		var want []string
		plain := !containsAny(query, `*?[\`)
		werr := r.Walk(func(k string, vals []Value) error {
			if containsAny(k, `\`) {
				plain = false
			}
			if fnmatch(k, query) {
				for _, v := range vals {
					want = append(want, v.Value)
				}
			}
			return nil
		})
		corrupt(werr)
		if werr != nil || err != nil || !plain {
			return
		}
		var gotVals []string
		for _, v := range got {
			gotVals = append(gotVals, v.Value)
		}
		sort.Strings(want)
		sort.Strings(gotVals)
		if fmt.Sprint(want) != fmt.Sprint(gotVals) {
			t.Fatalf("Match(%q) = %q, fnmatch over the keys gives %q", query, gotVals, want)
		}
	})
}

func FuzzFnmatch(f *testing.F) {
	f.Add("pci:v*d*sv*", "pci:v1d2sv3")
	f.Add("[!a-z]*[[:digit:]]?", "X12")
	f.Add(`\[*`, "[x")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := fnmatch(pattern, name)
		if pattern == name && !containsAny(pattern, `*?[\`) && !got {
			t.Fatalf("a literal pattern does not match itself: %q", pattern)
		}
	})
}

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}

func FuzzBuilderRoundTrip(f *testing.F) {
	f.Add("abc", "abd", "x")
	f.Fuzz(func(t *testing.T, k1, k2, k3 string) {
		var b Builder
		keys := []string{k1, k2, k3}
		for i, k := range keys {
			if err := b.Add(k, fmt.Sprint(i), uint32(i)); err != nil {
				return
			}
		}
		r, err := NewReader(b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			vals, err := r.Values(k)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, v := range vals {
				if v.Value == fmt.Sprint(i) {
					found = true
				}
			}
			if !found {
				t.Fatalf("key %q lost its value %d: %v", k, i, vals)
			}
		}
	})
}
