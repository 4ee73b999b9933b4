package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/kmmkit/kmmkit/reason"
)

// Usage is what the kernel says uses a loaded module.
type Usage struct {
	// RefCount is the module's reference count (/sys/module/<m>/refcnt):
	// one for each module that uses it, and one for each other user (a
	// process holding its device open, a mounted file system, another
	// kernel subsystem).
	RefCount int
	// Holders are the modules that use it (/sys/module/<m>/holders/),
	// sorted.
	Holders []string
}

// InUse reports whether the kernel would refuse to unload the module.
func (u Usage) InUse() bool { return u.RefCount > 0 || len(u.Holders) > 0 }

// UsageReader is a Kernel that reports what uses a loaded module, as
// LinuxKernel does from sysfs. The loader asks it before it unloads a
// module, and after the kernel refused to; with a Kernel that is not one
// it goes by Loaded's reference count and users.
type UsageReader interface {
	// Usage returns what uses the loaded module name.
	Usage(name string) (Usage, error)
}

// Bounds of what Usage reads from sysfs.
const (
	maxRefcntFile = 32
	maxHolders    = 4096
)

// Usage implements UsageReader: it reads /sys/module/<name>/refcnt and
// the entries of /sys/module/<name>/holders/ (under SysRoot), boundedly.
func (k LinuxKernel) Usage(name string) (Usage, error) {
	return readUsage(k.sys(), name)
}

// readUsage reads a module's usage under sysRoot.
func readUsage(sysRoot, name string) (Usage, error) {
	dir := filepath.Join(sysRoot, "module", name)
	var u Usage
	f, err := os.Open(filepath.Join(dir, "refcnt"))
	if err != nil {
		return u, fmt.Errorf("reading the reference count of %s: %w", name, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRefcntFile+1))
	f.Close()
	if err != nil {
		return u, fmt.Errorf("reading the reference count of %s: %w", name, err)
	}
	if len(data) > maxRefcntFile {
		return u, fmt.Errorf("reading the reference count of %s: more than %d bytes", name, maxRefcntFile)
	}
	if u.RefCount, err = strconv.Atoi(strings.TrimSpace(string(data))); err != nil || u.RefCount < 0 {
		return u, fmt.Errorf("the reference count of %s is %q, not a count", name, strings.TrimSpace(string(data)))
	}
	d, err := os.Open(filepath.Join(dir, "holders"))
	if errors.Is(err, os.ErrNotExist) {
		return u, nil // a kernel without module unloading has no holders
	}
	if err != nil {
		return u, fmt.Errorf("reading the holders of %s: %w", name, err)
	}
	defer d.Close()
	entries, err := d.ReadDir(maxHolders + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return u, fmt.Errorf("reading the holders of %s: %w", name, err)
	}
	if len(entries) > maxHolders {
		return u, fmt.Errorf("reading the holders of %s: more than %d", name, maxHolders)
	}
	for _, e := range entries {
		u.Holders = append(u.Holders, e.Name())
	}
	slices.Sort(u.Holders)
	return u, nil
}

// InUseError says a module cannot be unloaded because the kernel says it
// is in use. It carries reason.ModuleInUse and wraps syscall.EBUSY.
type InUseError struct {
	// Module is the module.
	Module string
	// Usage is what the kernel says uses it.
	Usage Usage
}

// Error implements error: the holders, or, when none is a module, what
// else holds a reference.
func (e *InUseError) Error() string {
	u := e.Usage
	if len(u.Holders) == 0 {
		return fmt.Sprintf("in use (reference count %d): a process holds its device, or another kernel user", u.RefCount)
	}
	s := "in use by " + strings.Join(u.Holders, ", ")
	if u.RefCount > len(u.Holders) {
		s += fmt.Sprintf(" (reference count %d: also a process holding its device, or another kernel user)", u.RefCount)
	}
	return s
}

// ReasonOf implements reason.Carrier.
func (e *InUseError) ReasonOf() reason.Reason { return reason.ModuleInUse }

// Unwrap returns syscall.EBUSY, the kernel's word for it.
func (e *InUseError) Unwrap() error { return syscall.EBUSY }

var _ reason.Carrier = (*InUseError)(nil)

// usage returns what uses the loaded module m: the kernel's UsageReader
// when it has one and it answers, else what Loaded said.
func (n *Native) usage(m LoadedModule) Usage {
	if r, ok := n.kernel.(UsageReader); ok {
		if u, err := r.Usage(m.Name); err == nil {
			return u
		}
	}
	holders := slices.Clone(m.UsedBy)
	slices.Sort(holders)
	return Usage{RefCount: m.RefCount, Holders: holders}
}

// inUse returns the error for unloading a module the kernel says is in
// use, or nil when it is not.
func (n *Native) inUse(m LoadedModule, hint string) error {
	u := n.usage(m)
	if !u.InUse() {
		return nil
	}
	return &Error{Op: "unload", Module: m.Name, Err: &InUseError{Module: m.Name, Usage: u}, Hint: hint}
}

// unloadOne unloads a loaded module. When the kernel refuses because the
// module is busy (it became used since it was checked), the error says
// by what.
func (n *Native) unloadOne(m LoadedModule, hint string) error {
	err := n.kernel.Unload(m.Name)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN) {
		if now, lerr := n.kernel.Loaded(); lerr == nil {
			if cur, ok := now[m.Name]; ok {
				if ie := n.inUse(cur, hint); ie != nil {
					return ie
				}
			}
		}
	}
	return &Error{Op: "unload", Module: m.Name, Err: err, Hint: hintFor("unload", err)}
}
