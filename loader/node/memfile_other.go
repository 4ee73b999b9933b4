//go:build !linux

package node

import "os"

// memFile returns a file holding data that is gone once closed: an
// unlinked temporary file, where there is no memfd_create.
func memFile(name string, data []byte) (*os.File, error) {
	f, err := os.CreateTemp("", "kmmkit-"+name+"-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
