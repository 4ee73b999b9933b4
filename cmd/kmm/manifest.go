package main

import (
	"fmt"
	"io"
	"os"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// maxManifestSize bounds how much of a manifest is read.
const maxManifestSize = 16 << 20

// readModules reads the Modules of the manifest at path ("-" is stdin).
func readModules(path string, stdin io.Reader) ([]v1beta1.Module, error) {
	if path == "" {
		return nil, fmt.Errorf("no manifest: give one with -f FILE (or -f - for standard input)")
	}
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxManifestSize)
	}
	modules, err := v1beta1.DecodeModules(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return modules, nil
}

// selectModule picks the Module called name, or the only one when name is
// empty.
func selectModule(modules []v1beta1.Module, name, path string) (*v1beta1.Module, error) {
	if name == "" {
		if len(modules) > 1 {
			names := make([]string, len(modules))
			for i := range modules {
				names[i] = modules[i].Name
			}
			return nil, fmt.Errorf("%s holds %d Modules %v: choose one with --module", path, len(modules), names)
		}
		return &modules[0], nil
	}
	for i := range modules {
		if modules[i].Name == name {
			return &modules[i], nil
		}
	}
	return nil, fmt.Errorf("%s has no Module named %q", path, name)
}
