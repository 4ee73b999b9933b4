package modfile

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// remap grows a mapping from mapAnon to n bytes, keeping its contents; the
// kernel moves the pages, so the old and new sizes are never mapped at
// once.
func remap(b []byte, n int) ([]byte, error) {
	m, err := unix.Mremap(b[:cap(b)], n, unix.MREMAP_MAYMOVE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d bytes: %w", n, err)
	}
	return m[:len(b)], nil
}
