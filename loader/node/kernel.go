package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Kernel is what the loader asks of the running kernel. LinuxKernel is
// the real one; tests give a fake.
type Kernel interface {
	// Release is the running kernel's release (uname -r).
	Release() (string, error)
	// Vermagic is the running kernel's whole version magic, the string
	// the kernel compares with each module's "vermagic" (for Debian's
	// 6.1: "6.1.0-57-amd64 SMP preempt mod_unload modversions "). An
	// error says it cannot be learned; the loader then checks only the
	// release.
	Vermagic() (string, error)
	// Loaded lists the loaded modules by name.
	Loaded() (map[string]LoadedModule, error)
	// Builtin reports whether a module is built into the kernel.
	Builtin(name string) bool
	// Load loads a module file with parameters ("a=1 b=2"); compressed
	// tells whether the file is compressed.
	Load(f *os.File, params string, compressed bool) error
	// Unload removes a loaded module.
	Unload(name string) error
}

// LinuxKernel is the running Linux kernel, through finit_module(2),
// delete_module(2), /proc/modules and /sys/module; its vermagic comes from
// one of its own in-tree modules under ModulesDir/<release>. On other
// systems every method fails with ErrNotLinux.
type LinuxKernel struct {
	// ProcRoot and SysRoot default to /proc and /sys.
	ProcRoot, SysRoot string
	// ModulesDir holds the running system's module trees; "" means
	// /lib/modules. The worker Pod mounts the host's /lib/modules there,
	// read-only.
	ModulesDir string
}

func (k LinuxKernel) modules() string {
	if k.ModulesDir == "" {
		return "/lib/modules"
	}
	return k.ModulesDir
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

// LoadedModule is one line of /proc/modules.
type LoadedModule struct {
	Name     string
	RefCount int
	// UsedBy lists the modules that depend on this one.
	UsedBy []string
}

// parseProcModules reads /proc/modules.
func parseProcModules(data []byte) (map[string]LoadedModule, error) {
	out := map[string]LoadedModule{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		m := LoadedModule{Name: f[0]}
		m.RefCount, _ = strconv.Atoi(f[2])
		if f[3] != "-" {
			for _, u := range strings.Split(strings.TrimSuffix(f[3], ","), ",") {
				if u != "" {
					m.UsedBy = append(m.UsedBy, u)
				}
			}
		}
		out[m.Name] = m
	}
	return out, sc.Err()
}

// errNoModuleSupport is returned when the kernel has no loadable modules.
var errNoModuleSupport = errors.New("this kernel cannot load modules (CONFIG_MODULES is off, or /proc/modules is missing)")

// readProcModules reads the loaded modules under procRoot.
func readProcModules(procRoot string) (map[string]LoadedModule, error) {
	data, err := os.ReadFile(filepath.Join(procRoot, "modules"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoModuleSupport
	}
	if err != nil {
		return nil, fmt.Errorf("reading loaded modules: %w", err)
	}
	return parseProcModules(data)
}
