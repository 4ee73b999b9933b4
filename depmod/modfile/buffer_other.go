//go:build !unix

package modfile

// sparseBuffer holds a file-sized buffer.
type sparseBuffer struct {
	buf []byte
}

func (b *sparseBuffer) get(size int) ([]byte, error) {
	if cap(b.buf) < size {
		b.buf = make([]byte, size)
	}
	return b.buf[:size], nil
}

func (b *sparseBuffer) release() {}

// lazyMapping is false: mapAnon allocates on the heap here.
const lazyMapping = false

func mapAnon(n int) ([]byte, error) { return make([]byte, n), nil }

func unmap([]byte) {}

func remap(b []byte, n int) ([]byte, error) {
	m := make([]byte, len(b), n)
	copy(m, b)
	return m, nil
}
