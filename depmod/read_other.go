//go:build !unix

package depmod

import (
	"os"

	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// readModule reads, decompresses and parses a module file.
func readModule(path string, dec *modfile.Decompressor) (*modfile.File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	elf, _, err := dec.Decompress(data)
	if err != nil {
		return nil, err
	}
	return modfile.Parse(elf)
}
