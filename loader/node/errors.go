package node

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Error is a failure to load or unload one module, with a hint a user can
// act on.
type Error struct {
	// Op is "load" or "unload".
	Op string
	// Module and Path name the module.
	Module, Path string
	// Hint explains the failure.
	Hint string
	// Err is the underlying error, often a syscall.Errno.
	Err error
	// RolledBack lists, after a failed load, the modules the same call
	// had loaded and unloaded again, in the order unloaded.
	RolledBack []string
	// NotRolledBack are the unload failures of modules the same call had
	// loaded and could not unload again: they are still loaded.
	NotRolledBack []error
}

// Error implements error.
func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s", e.Op, e.Module)
	if e.Path != "" {
		s += " (" + e.Path + ")"
	}
	s += ": " + e.Err.Error()
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	if len(e.RolledBack) > 0 {
		s += "; rolled back: " + strings.Join(e.RolledBack, ", ")
	}
	if len(e.NotRolledBack) > 0 {
		still := make([]string, len(e.NotRolledBack))
		for i, err := range e.NotRolledBack {
			still[i] = err.Error()
		}
		s += "; could not roll back, still loaded: " + strings.Join(still, "; ")
	}
	return s
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ErrNotLinux is returned by LinuxKernel on systems other than Linux:
// only Linux loads modules this way.
var ErrNotLinux = errors.New("loading kernel modules works only on Linux")

// ErrVermagic is wrapped when a module was built for another kernel: its
// release or its flags differ from the running kernel's.
var ErrVermagic = errors.New("vermagic mismatch")

// hintFor explains a kernel error from finit_module or delete_module.
func hintFor(op string, err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	if hint := signatureHint(errno); hint != "" {
		return hint
	}
	switch errno {
	case syscall.ENOENT:
		return "the module uses a symbol or a parameter the kernel does not know (see dmesg); it was built against another kernel, or a dependency is missing"
	case syscall.EPERM:
		return "not permitted: the loader needs CAP_SYS_MODULE, and module loading may be disabled (kernel.modules_disabled) or locked down"
	case syscall.ENOEXEC:
		return "invalid module format: the module was built for another kernel or architecture (see dmesg)"
	case syscall.EINVAL:
		return "the kernel refused the module or its parameters (see dmesg)"
	case syscall.ENOSYS:
		return errNoModuleSupport.Error()
	case syscall.EBUSY:
		if op == "unload" {
			return "the module is in use"
		}
	case syscall.EAGAIN:
		if op == "unload" {
			return "the module is in use and cannot be removed without waiting"
		}
	}
	return ""
}
