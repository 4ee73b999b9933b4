//go:build unix

package modfile

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// bigBuffer is the size above which a module's buffer is mapped fresh from
// the kernel rather than reused, so its untouched pages never become
// resident and its touched pages are released right after.
const bigBuffer = 1 << 20

// sparseBuffer holds a file-sized buffer of which only the ranges read
// from disk are ever touched.
type sparseBuffer struct {
	small  []byte
	mapped []byte
}

// get returns a buffer of size bytes. A mapping the system refuses (an
// address-space limit, say) is an error, never a fallback to the heap.
func (b *sparseBuffer) get(size int) ([]byte, error) {
	if size <= bigBuffer {
		if cap(b.small) < size {
			b.small = make([]byte, bigBuffer)
		}
		return b.small[:size], nil
	}
	m, err := mapAnon(size)
	if err != nil {
		return nil, err
	}
	b.mapped = m
	return m, nil
}

// release returns the pages of a mapped buffer to the kernel.
func (b *sparseBuffer) release() {
	if b.mapped != nil {
		unix.Munmap(b.mapped)
		b.mapped = nil
	}
}

// lazyMapping tells that a mapping from mapAnon costs memory only for the
// pages written to, so a declared output size may be mapped at once.
const lazyMapping = true

// mapAnon maps n bytes of fresh memory.
func mapAnon(n int) ([]byte, error) {
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d bytes: %w", n, err)
	}
	return m, nil
}

// unmap releases memory from mapAnon.
func unmap(b []byte) { unix.Munmap(b[:cap(b)]) }
