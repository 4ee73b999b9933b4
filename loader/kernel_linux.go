//go:build linux

package loader

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// LinuxKernel is the running Linux kernel, through finit_module(2),
// delete_module(2), /proc/modules and /sys/module.
type LinuxKernel struct {
	// ProcRoot and SysRoot default to /proc and /sys.
	ProcRoot, SysRoot string
}

func (k LinuxKernel) proc() string {
	if k.ProcRoot == "" {
		return "/proc"
	}
	return k.ProcRoot
}

func (k LinuxKernel) sys() string {
	if k.SysRoot == "" {
		return "/sys"
	}
	return k.SysRoot
}

// Release implements Kernel.
func (k LinuxKernel) Release() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
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
