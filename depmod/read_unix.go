//go:build unix

package depmod

import (
	"fmt"
	"os"
	"syscall"

	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// readModule maps a module file, decompresses it when needed, and parses
// it. Parsing copies what it keeps, so the mapping is released on return.
func readModule(path string, dec *modfile.Decompressor) (*modfile.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, unwrapPathError(err)
	}
	size := st.Size()
	if size < 6 {
		return nil, fmt.Errorf("%d bytes: %w", size, syscall.EINVAL)
	}
	if size > 1<<34 {
		return nil, fmt.Errorf("%d bytes: %w", size, syscall.EFBIG)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	defer syscall.Munmap(data)
	elf, _, err := dec.Decompress(data)
	if err != nil {
		return nil, err
	}
	return modfile.Parse(elf)
}
