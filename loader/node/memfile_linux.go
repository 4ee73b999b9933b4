//go:build linux

package node

import (
	"os"

	"golang.org/x/sys/unix"
)

// memFile returns an anonymous in-memory file holding data, for
// finit_module.
func memFile(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("kmmkit-"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
