package index

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawNode is a node to encode by hand, with children as indexes into the
// file's node list, so tests can share and loop offsets as no builder
// would.
type rawNode struct {
	prefix   string
	first    byte
	children []int // node indexes; -1 for none
	values   []Value
}

// rawIndex encodes nodes (the root is nodes[0]) in order after the
// header; children may point anywhere, themselves included.
func rawIndex(nodes []rawNode) []byte {
	size := func(n rawNode) int {
		s := 0
		if n.prefix != "" {
			s += len(n.prefix) + 1
		}
		if len(n.children) > 0 {
			s += 2 + 4*len(n.children)
		}
		if len(n.values) > 0 {
			s += 4
			for _, v := range n.values {
				s += 4 + len(v.Value) + 1
			}
		}
		return s
	}
	offs := make([]uint32, len(nodes))
	off := uint32(headerSize)
	for i, n := range nodes {
		offs[i] = off
		off += uint32(size(n))
	}
	ref := func(i int) uint32 {
		if i < 0 {
			return 0
		}
		r := offs[i]
		n := nodes[i]
		if n.prefix != "" {
			r |= flagPrefix
		}
		if len(n.children) > 0 {
			r |= flagChildren
		}
		if len(n.values) > 0 {
			r |= flagValues
		}
		return r
	}
	out := binary.BigEndian.AppendUint32(nil, magic)
	out = binary.BigEndian.AppendUint32(out, version)
	out = binary.BigEndian.AppendUint32(out, ref(0))
	for _, n := range nodes {
		if n.prefix != "" {
			out = append(append(out, n.prefix...), 0)
		}
		if len(n.children) > 0 {
			out = append(out, n.first, n.first+byte(len(n.children)-1))
			for _, c := range n.children {
				out = binary.BigEndian.AppendUint32(out, ref(c))
			}
		}
		if len(n.values) > 0 {
			out = binary.BigEndian.AppendUint32(out, uint32(len(n.values)))
			for _, v := range n.values {
				out = binary.BigEndian.AppendUint32(out, v.Priority)
				out = append(append(out, v.Value...), 0)
			}
		}
	}
	return out
}

// TestMatchAdversarial runs Match on crafted modules.alias.bin files that
// made the lookup run for seconds (788 bytes: 7 to 9 s) or forever:
// offsets shared so paths multiply, loops, many values on a shared node,
// and deep well-formed tries built to make fnmatch slow. Each lookup must
// end, with ErrCorrupt or a result, within MatchSteps of the file's size,
// and a shared or looping file is caught in few steps.
func TestMatchAdversarial(t *testing.T) {
	vals := make([]Value, 30)
	for i := range vals {
		vals[i] = Value{Priority: uint32(i % 3), Value: fmt.Sprint("m", i)}
	}
	// A diamond ladder: node i has children 'a' and 'b' both pointing at
	// node i+1, so 2^40 paths reach the last node.
	var ladder []rawNode
	ladder = append(ladder, rawNode{first: '*', children: []int{1}})
	for i := 1; i <= 40; i++ {
		ladder = append(ladder, rawNode{first: 'a', children: []int{i + 1, i + 1}, values: vals[:2]})
	}
	ladder = append(ladder, rawNode{values: vals})

	cases := map[string]struct {
		data  []byte
		query string
	}{
		"diamond ladder": {rawIndex(ladder), "abababab"},
		"self loop under a wildcard": {rawIndex([]rawNode{
			{first: '*', children: []int{1}},
			{first: 'a', children: []int{1}, values: vals},
		}), strings.Repeat("a", 100)},
		"every child is the root": {rawIndex([]rawNode{
			{prefix: "*", first: 0, children: func() []int { c := make([]int, 256); return c }(), values: vals},
		}), "anything"},
		"shared node with many values": {rawIndex([]rawNode{
			{first: '*', children: []int{1, 1, 1}},
			{first: '*', children: []int{2, 2, 2}, values: vals},
			{first: '*', children: []int{3, 3, 3}, values: vals},
			{values: vals},
		}), "**"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := NewReader(tc.data)
			require.NoError(t, err)
			_, steps, err := r.match(tc.query)
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), "reached twice")
			assert.LessOrEqual(t, steps, 8*len(tc.data)+64, "%d-byte file", len(tc.data))
			err = r.Walk(func(string, []Value) error { return nil })
			assert.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

// TestMatchSlowPatterns stores well-formed keys built to make fnmatch
// backtrack (many stars) or to repeat a long pattern under many values,
// and checks that Match stays within its budget: it answers as fnmatch
// does when the work fits, and fails with ErrCorrupt instead of running
// on when it does not.
func TestMatchSlowPatterns(t *testing.T) {
	var b Builder
	stars := strings.Repeat("*a", 200) + "b"
	require.NoError(t, b.Add(stars, "stars", 0))
	require.NoError(t, b.Add("*x", "x", 1))
	data := b.Bytes()
	r, err := NewReader(data)
	require.NoError(t, err)
	vals, steps, err := r.match(strings.Repeat("a", 300) + "x")
	require.NoError(t, err)
	assert.Equal(t, []Value{{Priority: 1, Value: "x"}}, vals)
	assert.LessOrEqual(t, steps, MatchSteps(len(data), 301))

	// A 60 KiB wildcard prefix shared by 4,000 keys: each match repeats
	// it, 240 MB of fnmatch work in a 130 KB file.
	var deep Builder
	long := "*" + strings.Repeat("a", 60<<10)
	for i := range 4000 {
		require.NoError(t, deep.Add(long+fmt.Sprint(i), "v", uint32(i)))
	}
	data = deep.Bytes()
	r, err = NewReader(data)
	require.NoError(t, err)
	_, steps, err = r.match(strings.Repeat("a", 64))
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "steps")
	assert.LessOrEqual(t, steps, MatchSteps(len(data), 64)+2*len(long)+2, "stopped at the budget")
}
