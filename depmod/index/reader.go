package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
)

// ErrCorrupt is wrapped by every error about a malformed index file.
var ErrCorrupt = errors.New("corrupt index")

// Reader answers lookups on a binary index held in memory. It is safe for
// concurrent use.
type Reader struct {
	data []byte
	root uint32
}

// Open reads the index file at path.
func Open(path string) (*Reader, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// NewReader checks the header of an index file and returns a Reader on it.
// The data must not change while the Reader is used.
func NewReader(data []byte) (*Reader, error) {
	if len(data) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorrupt, len(data), headerSize)
	}
	if m := binary.BigEndian.Uint32(data); m != magic {
		return nil, fmt.Errorf("%w: magic %#08x, want %#08x", ErrCorrupt, m, uint32(magic))
	}
	if v := binary.BigEndian.Uint32(data[4:]); v>>16 != version>>16 {
		return nil, fmt.Errorf("%w: format version %d.%d, want 2.x", ErrCorrupt, v>>16, v&0xffff)
	}
	return &Reader{data: data, root: binary.BigEndian.Uint32(data[8:])}, nil
}

// parsed is a decoded node record.
type parsed struct {
	prefix string
	first  byte
	refs   []uint32
	values []Value
}

// child returns the reference of the child under c, or 0.
func (p *parsed) child(c byte) uint32 {
	if len(p.refs) == 0 || c < p.first || int(c-p.first) >= len(p.refs) {
		return 0
	}
	return p.refs[c-p.first]
}

// node decodes the node at ref.
func (r *Reader) node(ref uint32) (*parsed, error) {
	off := int(ref & offsetMask)
	if off < headerSize || off > len(r.data) {
		return nil, fmt.Errorf("%w: node offset %d outside the file (%d bytes)", ErrCorrupt, off, len(r.data))
	}
	p := &parsed{}
	pos := off
	if ref&flagPrefix != 0 {
		s, next, err := r.cstring(pos)
		if err != nil {
			return nil, err
		}
		p.prefix, pos = s, next
	}
	if ref&flagChildren != 0 {
		if pos+2 > len(r.data) {
			return nil, fmt.Errorf("%w: node at %d: children cut off", ErrCorrupt, off)
		}
		first, last := r.data[pos], r.data[pos+1]
		pos += 2
		if last < first {
			return nil, fmt.Errorf("%w: node at %d: child range %#x-%#x is reversed", ErrCorrupt, off, first, last)
		}
		n := int(last-first) + 1
		if pos+4*n > len(r.data) {
			return nil, fmt.Errorf("%w: node at %d: children cut off", ErrCorrupt, off)
		}
		p.first = first
		p.refs = make([]uint32, n)
		for i := range p.refs {
			p.refs[i] = binary.BigEndian.Uint32(r.data[pos:])
			pos += 4
		}
	}
	if ref&flagValues != 0 {
		if pos+4 > len(r.data) {
			return nil, fmt.Errorf("%w: node at %d: values cut off", ErrCorrupt, off)
		}
		count := int(binary.BigEndian.Uint32(r.data[pos:]))
		pos += 4
		if count > (len(r.data)-pos)/5 {
			return nil, fmt.Errorf("%w: node at %d: %d values cannot fit", ErrCorrupt, off, count)
		}
		p.values = make([]Value, count)
		for i := range p.values {
			if pos+4 > len(r.data) {
				return nil, fmt.Errorf("%w: node at %d: values cut off", ErrCorrupt, off)
			}
			prio := binary.BigEndian.Uint32(r.data[pos:])
			s, next, err := r.cstring(pos + 4)
			if err != nil {
				return nil, err
			}
			p.values[i], pos = Value{Priority: prio, Value: s}, next
		}
	}
	return p, nil
}

// cstring returns the NUL-terminated string at pos and the offset after it.
func (r *Reader) cstring(pos int) (string, int, error) {
	for i := pos; i < len(r.data); i++ {
		if r.data[i] == 0 {
			return string(r.data[pos:i]), i + 1, nil
		}
	}
	return "", 0, fmt.Errorf("%w: string at %d has no terminating NUL", ErrCorrupt, pos)
}

// find walks to the node whose key is exactly key; nil when there is none.
func (r *Reader) find(key string) (*parsed, error) {
	ref := r.root
	i := 0
	for steps := 0; ; steps++ {
		if steps > len(key)+1 {
			return nil, fmt.Errorf("%w: the trie loops", ErrCorrupt)
		}
		n, err := r.node(ref)
		if err != nil {
			return nil, err
		}
		for j := 0; j < len(n.prefix); j++ {
			if i+j >= len(key) || n.prefix[j] != key[i+j] {
				return nil, nil
			}
		}
		i += len(n.prefix)
		if i == len(key) {
			return n, nil
		}
		ref = n.child(key[i])
		if ref&offsetMask == 0 {
			return nil, nil
		}
		i++
	}
}

// Lookup returns the first (lowest-priority) value stored under exactly
// key, as libkmod's exact search does for modules.dep.bin and
// modules.builtin.bin.
func (r *Reader) Lookup(key string) (string, bool, error) {
	n, err := r.find(key)
	if err != nil || n == nil || len(n.values) == 0 {
		return "", false, err
	}
	return n.values[0].Value, true, nil
}

// Values returns every value stored under exactly key, lowest priority
// first.
func (r *Reader) Values(key string) ([]Value, error) {
	n, err := r.find(key)
	if err != nil || n == nil {
		return nil, err
	}
	return n.values, nil
}

// Match returns the values of every stored key that, read as an fnmatch
// pattern, matches query, merged by ascending priority as libkmod does
// (equal priorities: the value found later first). modprobe resolves
// aliases and symbols this way in modules.alias.bin, modules.symbols.bin
// and modules.builtin.alias.bin.
//
// The work is bounded by the file, whatever it holds: each node is entered
// at most once for each position in query (a trie reaches a node once; a
// second arrival means shared or looping offsets, and the file is
// reported corrupt), and the whole lookup (nodes decoded, values gathered
// and fnmatch steps) takes at most MatchSteps(len(file), len(query))
// steps; past it Match fails with ErrCorrupt rather than run on.
func (r *Reader) Match(query string) ([]Value, error) {
	vals, _, err := r.match(query)
	return vals, err
}

// MatchSteps is the step budget of a Match on a file of fileSize bytes
// for a query of querySize bytes: 16 steps a byte of the file, 64 a byte
// of the query, and 4096. A real lookup takes a small part of it: on
// Debian 12's modules.alias.bin (1.26 MB, budget about 20 million), a
// query made from each of its 25,243 aliases takes 11,854 steps on
// average and 101,066 at most.
func MatchSteps(fileSize, querySize int) int { return 16*fileSize + 64*querySize + 4096 }

// match is Match, also returning the steps it took.
func (r *Reader) match(query string) ([]Value, int, error) {
	budget := MatchSteps(len(r.data), len(query))
	m := &matcher{r: r, budget: budget, visited: map[[2]uint32]bool{}}
	if err := m.node(r.root, query); err != nil {
		return nil, budget - m.budget, err
	}
	// Ascending priority; among equal priorities the value found later
	// comes first, as libkmod inserts each before its equals.
	slices.Reverse(m.out)
	sort.SliceStable(m.out, func(i, j int) bool { return m.out[i].Priority < m.out[j].Priority })
	return m.out, budget - m.budget, nil
}

// matcher carries the state of one wildcard search.
type matcher struct {
	r       *Reader
	out     []Value
	budget  int
	buf     []byte
	visited map[[2]uint32]bool // (node offset, query bytes left) entered by all
}

// spend takes n steps from the budget.
func (m *matcher) spend(n int) error {
	m.budget -= n
	if m.budget < 0 {
		return fmt.Errorf("%w: the lookup needs more than %d steps: the trie loops or is built to be slow", ErrCorrupt, MatchSteps(len(m.r.data), 0))
	}
	return nil
}

// load decodes the node at ref, paying for its size.
func (m *matcher) load(ref uint32) (*parsed, error) {
	n, err := m.r.node(ref)
	if err != nil {
		return nil, err
	}
	return n, m.spend(1 + len(n.prefix) + len(n.refs) + len(n.values))
}

// add gathers the values of a matching key.
func (m *matcher) add(vals []Value) error {
	m.out = append(m.out, vals...)
	return m.spend(len(vals))
}

// node follows the query from ref, branching into every wildcard child.
func (m *matcher) node(ref uint32, sub string) error {
	for {
		n, err := m.load(ref)
		if err != nil {
			return err
		}
		for j := 0; j < len(n.prefix); j++ {
			c := n.prefix[j]
			if c == '*' || c == '?' || c == '[' {
				rest := ""
				if j <= len(sub) {
					rest = sub[j:]
				}
				return m.all(ref, n, j, rest)
			}
			if j >= len(sub) || c != sub[j] {
				return nil
			}
		}
		sub = sub[len(n.prefix):]
		for _, w := range []byte{'*', '?', '['} {
			if ch := n.child(w); ch&offsetMask != 0 {
				m.buf = append(m.buf, w)
				child, err := m.load(ch)
				if err != nil {
					return err
				}
				if err := m.all(ch, child, 0, sub); err != nil {
					return err
				}
				m.buf = m.buf[:len(m.buf)-1]
			}
		}
		if sub == "" {
			return m.add(n.values)
		}
		ref = n.child(sub[0])
		if ref&offsetMask == 0 {
			return nil
		}
		sub = sub[1:]
	}
}

// all gathers the values of every key below n (the node at ref) whose
// pattern, from the wildcard on, matches sub.
func (m *matcher) all(ref uint32, n *parsed, j int, sub string) error {
	key := [2]uint32{ref & offsetMask, uint32(len(sub))}
	if m.visited[key] {
		return fmt.Errorf("%w: node at %d is reached twice: offsets are shared or loop", ErrCorrupt, ref&offsetMask)
	}
	m.visited[key] = true
	if len(m.buf)+len(n.prefix) > 1<<16 {
		return fmt.Errorf("%w: key longer than 64 KiB", ErrCorrupt)
	}
	pushed := len(n.prefix) - j
	m.buf = append(m.buf, n.prefix[j:]...)
	for i, cref := range n.refs {
		if cref&offsetMask == 0 {
			continue
		}
		child, err := m.load(cref)
		if err != nil {
			return err
		}
		m.buf = append(m.buf, n.first+byte(i))
		if err := m.all(cref, child, 0, sub); err != nil {
			return err
		}
		m.buf = m.buf[:len(m.buf)-1]
	}
	if len(n.values) > 0 {
		steps := len(m.buf)
		ok := fnmatchSteps(string(m.buf), sub, &steps, max(m.budget, 0))
		if err := m.spend(steps); err != nil {
			return err
		}
		if ok {
			if err := m.add(n.values); err != nil {
				return err
			}
		}
	}
	m.buf = m.buf[:len(m.buf)-pushed]
	return nil
}

// Walk calls fn for every key that has values, in ascending key order.
// Each node is visited once: shared or looping offsets, and keys longer
// than 64 KiB, make the file corrupt.
func (r *Reader) Walk(fn func(key string, values []Value) error) error {
	visited := map[uint32]bool{}
	var walk func(ref uint32, key []byte) error
	walk = func(ref uint32, key []byte) error {
		if visited[ref&offsetMask] {
			return fmt.Errorf("%w: node at %d is reached twice: offsets are shared or loop", ErrCorrupt, ref&offsetMask)
		}
		visited[ref&offsetMask] = true
		n, err := r.node(ref)
		if err != nil {
			return err
		}
		if len(key)+len(n.prefix) > 1<<16 {
			return fmt.Errorf("%w: key longer than 64 KiB", ErrCorrupt)
		}
		key = append(key, n.prefix...)
		if len(n.values) > 0 {
			if err := fn(string(key), n.values); err != nil {
				return err
			}
		}
		for i, c := range n.refs {
			if c&offsetMask == 0 {
				continue
			}
			if err := walk(c, append(key, n.first+byte(i))); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(r.root, nil)
}
