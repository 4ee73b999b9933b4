//go:build linux

package node

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Release implements Kernel.
func (k LinuxKernel) Release() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// Vermagic implements Kernel: the vermagic of an in-tree module
// ("intree=Y") of the running release under ModulesDir, which the kernel's
// build stamped with the same VERMAGIC_STRING as the kernel itself.
func (k LinuxKernel) Vermagic() (string, error) {
	release, err := k.Release()
	if err != nil {
		return "", err
	}
	return inTreeVermagic(filepath.Join(k.modules(), release), release)
}

// Loaded implements Kernel.
func (k LinuxKernel) Loaded() (map[string]LoadedModule, error) { return readProcModules(k.proc()) }

// Builtin implements Kernel: /sys/module knows the module, but it has no
// initstate, which only loadable modules have.
func (k LinuxKernel) Builtin(name string) bool {
	dir := filepath.Join(k.sys(), "module", name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, "initstate"))
	return os.IsNotExist(err)
}

// moduleInitCompressedFile is MODULE_INIT_COMPRESSED_FILE (Linux 6.4+).
const moduleInitCompressedFile = 4

// Load implements Kernel.
func (k LinuxKernel) Load(f *os.File, params string, compressed bool) error {
	flags := 0
	if compressed {
		flags = moduleInitCompressedFile
	}
	return unix.FinitModule(int(f.Fd()), params, flags)
}

// Unload implements Kernel.
func (k LinuxKernel) Unload(name string) error {
	return unix.DeleteModule(name, unix.O_NONBLOCK)
}
