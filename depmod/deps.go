package depmod

import (
	"slices"
	"strings"
)

// computeDeps links every module to the owners of the symbols it needs.
func computeDeps(mods []*module, syms *symbolTable, opts Options, log *logger) {
	for _, m := range mods {
		if m.file == nil {
			continue
		}
		for _, need := range m.file.Needs {
			e := syms.lookup(need.Name, opts.SymbolPrefix)
			if e == nil {
				if opts.ErrSyms && !need.Weak {
					log.warnf("%s needs unknown symbol %s", m.path, need.Name)
				}
				continue
			}
			if opts.ErrSyms && syms.haveCRCs && !need.Weak && e.crc != need.CRC {
				log.warnf("%s disagrees about version of symbol %s", m.path, need.Name)
			}
			if e.owner == nil {
				continue
			}
			if !containsModule(m.deps, e.owner) {
				m.deps = append(m.deps, e.owner)
				e.owner.users++
			}
		}
	}
}

func containsModule(list []*module, m *module) bool {
	for _, x := range list {
		if x == m {
			return true
		}
	}
	return false
}

// sortDeps numbers the modules topologically as kmod does (Kahn's
// algorithm with a LIFO stack) and returns the cycles when there are any.
func sortDeps(mods []*module) [][]string {
	users := make([]int, len(mods))
	var stack []*module
	for i, m := range mods {
		users[i] = m.users
		if users[i] == 0 {
			stack = append(stack, m)
		}
	}
	k := 0
	for len(stack) > 0 {
		m := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		m.sortIdx = k
		k++
		for _, d := range m.deps {
			users[d.idx]--
			if users[d.idx] == 0 {
				stack = append(stack, d)
			}
		}
	}
	if k == len(mods) {
		return nil
	}
	return findCycles(mods, users)
}

// findCycles reports cycles as kmod does: a depth-first search from each
// module still used, printing every path that returns to the start. Unlike
// kmod 30, which can search forever when a path enters a cycle that does
// not contain the start, the search never expands a module already on the
// current path; wherever kmod terminates, the result is the same.
func findCycles(mods []*module, users []int) [][]string {
	var roots []*module
	for i, m := range mods {
		if users[i] > 0 {
			roots = append(roots, m)
		}
	}
	inRoots := func(m *module) int {
		for i, r := range roots {
			if r == m {
				return i
			}
		}
		return -1
	}
	var cycles [][]string
	budget := 1 << 22
	for len(roots) > 0 {
		root := roots[0]
		roots = roots[1:]
		visited := map[*module]bool{}
		stack := []*cycleVertex{{m: root}}
		for len(stack) > 0 && budget > 0 {
			budget--
			v := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if visited[v.m] && v.m == root {
				var chain []string
				for p := v; p != nil; p = p.parent {
					chain = append(chain, p.m.modname)
					if i := inRoots(p.m); i >= 0 {
						roots = append(roots[:i], roots[i+1:]...)
					}
				}
				for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
					chain[i], chain[j] = chain[j], chain[i]
				}
				cycles = append(cycles, chain)
				continue
			}
			if visited[v.m] && v.parent.has(v.m) {
				continue
			}
			visited[v.m] = true
			if len(v.m.deps) == 0 {
				if i := inRoots(v.m); i >= 0 {
					roots = append(roots[:i], roots[i+1:]...)
				}
				continue
			}
			for _, d := range v.m.deps {
				stack = append(stack, &cycleVertex{m: d, parent: v})
			}
		}
	}
	return cycles
}

// cycleVertex is a step of the cycle search: a module and how it was
// reached.
type cycleVertex struct {
	m      *module
	parent *cycleVertex
}

// has reports whether m is on the chain from v up to the start.
func (v *cycleVertex) has(m *module) bool {
	for p := v; p != nil; p = p.parent {
		if p.m == m {
			return true
		}
	}
	return false
}

// countCycleModules logs the cycles as kmod does and returns how many
// distinct modules they hold.
func countCycleModules(cycles [][]string, log *logger) int {
	names := map[string]bool{}
	for _, c := range cycles {
		log.errorf("Cycle detected: %s", strings.Join(c, " -> "))
		for _, n := range c {
			names[n] = true
		}
	}
	log.errorf("Found %d modules in dependency cycles!", len(names))
	return len(names)
}

// closureWalker computes transitive dependencies, reusing its buffers.
type closureWalker struct {
	seen  []uint32 // by module idx: the walk that last saw it
	walk  uint32
	stack []*module
	out   []*module
}

// closure returns the transitive dependencies of m, sorted by their
// topological number. The result is valid until the next call.
func (c *closureWalker) closure(m *module, n int) []*module {
	if len(c.seen) < n {
		c.seen = make([]uint32, n)
	}
	c.walk++
	c.seen[m.idx] = c.walk
	c.out = c.out[:0]
	c.stack = append(c.stack[:0], m.deps...)
	for len(c.stack) > 0 {
		d := c.stack[len(c.stack)-1]
		c.stack = c.stack[:len(c.stack)-1]
		if c.seen[d.idx] == c.walk {
			continue
		}
		c.seen[d.idx] = c.walk
		c.out = append(c.out, d)
		c.stack = append(c.stack, d.deps...)
	}
	slices.SortFunc(c.out, func(a, b *module) int { return a.sortIdx - b.sortIdx })
	return c.out
}
