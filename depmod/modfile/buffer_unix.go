//go:build unix

package modfile

import "syscall"

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

// get returns a buffer of size bytes.
func (b *sparseBuffer) get(size int) []byte {
	if size <= bigBuffer {
		if cap(b.small) < size {
			b.small = make([]byte, bigBuffer)
		}
		return b.small[:size]
	}
	m, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, size)
	}
	b.mapped = m
	return m
}

// release returns the pages of a mapped buffer to the kernel.
func (b *sparseBuffer) release() {
	if b.mapped != nil {
		syscall.Munmap(b.mapped)
		b.mapped = nil
	}
}
