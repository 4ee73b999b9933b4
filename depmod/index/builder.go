package index

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Value is one value stored under a key, with its priority (lower sorts
// first; depmod uses the module's position).
type Value struct {
	Priority uint32
	Value    string
}

// node is a trie node: the rest of its edge label, its children by next
// character, and its values sorted by priority.
type node struct {
	prefix   string
	children []*node // indexed by character; nil when the node has none
	first    byte
	values   []Value
}

// child returns the child reached by c, or nil.
func (n *node) child(c byte) *node {
	if n.children == nil || c < n.first || int(c-n.first) >= len(n.children) {
		return nil
	}
	return n.children[c-n.first]
}

// setChild hangs ch under character c.
func (n *node) setChild(c byte, ch *node) {
	if n.children == nil {
		n.children = []*node{ch}
		n.first = c
		return
	}
	if c < n.first {
		grown := make([]*node, int(n.first-c)+len(n.children))
		copy(grown[n.first-c:], n.children)
		n.children, n.first = grown, c
	} else if int(c-n.first) >= len(n.children) {
		grown := make([]*node, int(c-n.first)+1)
		copy(grown, n.children)
		n.children = grown
	}
	n.children[c-n.first] = ch
}

// Builder collects keys and values and writes them as a binary index.
// The zero value is an empty index ready to use.
type Builder struct {
	root node
	keys int
}

// Len returns how many Add calls were made.
func (b *Builder) Len() int { return b.keys }

// Add stores value under key with the given priority. Keys and values must
// be 7-bit ASCII without NUL bytes, as kmod requires; Add reports other
// bytes and stores nothing. A value already present is stored again, as kmod does, and
// values of equal priority are kept in reverse order of addition.
func (b *Builder) Add(key, value string, priority uint32) error {
	if err := checkASCII(key); err != nil {
		return fmt.Errorf("index key %q: %w", key, err)
	}
	if err := checkASCII(value); err != nil {
		return fmt.Errorf("index value %q: %w", value, err)
	}
	b.keys++
	n := &b.root
	i := 0
	for {
		// Compare the node's prefix with the key; split it at the first
		// difference.
		j := 0
		for j < len(n.prefix) {
			if i+j >= len(key) || n.prefix[j] != key[i+j] {
				split(n, j)
				break
			}
			j++
		}
		i += j
		if i == len(key) {
			n.addValue(value, priority)
			return nil
		}
		c := key[i]
		ch := n.child(c)
		if ch == nil {
			leaf := &node{prefix: key[i+1:]}
			leaf.addValue(value, priority)
			n.setChild(c, leaf)
			return nil
		}
		n, i = ch, i+1
	}
}

// split cuts n's prefix at j: n keeps prefix[:j] and a single child under
// prefix[j] takes the rest, n's values and n's children.
func split(n *node, j int) {
	rest := &node{prefix: n.prefix[j+1:], children: n.children, first: n.first, values: n.values}
	c := n.prefix[j]
	n.prefix, n.children, n.values = n.prefix[:j], nil, nil
	n.setChild(c, rest)
}

// addValue inserts v before the first value whose priority is not lower.
func (n *node) addValue(v string, priority uint32) {
	i := 0
	for i < len(n.values) && n.values[i].Priority < priority {
		i++
	}
	n.values = append(n.values, Value{})
	copy(n.values[i+1:], n.values[i:])
	n.values[i] = Value{Priority: priority, Value: v}
}

// checkASCII rejects bytes kmod's index cannot hold: non-ASCII bytes, and
// NUL, which ends strings in the file.
func checkASCII(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return fmt.Errorf("bad character 0x%02x at offset %d: only 7-bit ASCII is supported", s[i], i)
		}
		if s[i] == 0 {
			return fmt.Errorf("NUL byte at offset %d", i)
		}
	}
	return nil
}

// Bytes returns the index file as kmod 30 writes it.
func (b *Builder) Bytes() []byte {
	w := &writer{buf: make([]byte, headerSize, 4096)}
	binary.BigEndian.PutUint32(w.buf[0:], magic)
	binary.BigEndian.PutUint32(w.buf[4:], version)
	root := w.write(&b.root)
	binary.BigEndian.PutUint32(w.buf[8:], root)
	return w.buf
}

// WriteTo writes the index file to out.
func (b *Builder) WriteTo(out io.Writer) (int64, error) {
	n, err := out.Write(b.Bytes())
	return int64(n), err
}

// writer lays out nodes in post-order: children first, in ascending
// character order, then the node itself.
type writer struct {
	buf []byte
}

// write writes the subtree of n and returns n's reference.
func (w *writer) write(n *node) uint32 {
	var refs []uint32
	if n.children != nil {
		refs = make([]uint32, len(n.children))
		for i, ch := range n.children {
			if ch != nil {
				refs[i] = w.write(ch)
			}
		}
	}
	off := uint32(len(w.buf))
	ref := off
	if n.prefix != "" {
		ref |= flagPrefix
		w.buf = append(w.buf, n.prefix...)
		w.buf = append(w.buf, 0)
	}
	if n.children != nil {
		ref |= flagChildren
		w.buf = append(w.buf, n.first, n.first+byte(len(n.children)-1))
		for _, r := range refs {
			w.buf = binary.BigEndian.AppendUint32(w.buf, r)
		}
	}
	if len(n.values) > 0 {
		ref |= flagValues
		w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(len(n.values)))
		for _, v := range n.values {
			w.buf = binary.BigEndian.AppendUint32(w.buf, v.Priority)
			w.buf = append(w.buf, v.Value...)
			w.buf = append(w.buf, 0)
		}
	}
	return ref
}
