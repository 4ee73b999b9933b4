//go:build !unix

package modfile

// sparseBuffer holds a file-sized buffer.
type sparseBuffer struct {
	buf []byte
}

func (b *sparseBuffer) get(size int) []byte {
	if cap(b.buf) < size {
		b.buf = make([]byte, size)
	}
	return b.buf[:size]
}

func (b *sparseBuffer) release() {}
