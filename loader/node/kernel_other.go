//go:build !linux

package node

import "os"

// Release implements Kernel; it fails with ErrNotLinux.
func (LinuxKernel) Release() (string, error) { return "", ErrNotLinux }

// Vermagic implements Kernel; it fails with ErrNotLinux.
func (LinuxKernel) Vermagic() (string, error) { return "", ErrNotLinux }

// Loaded implements Kernel; it fails with ErrNotLinux.
func (LinuxKernel) Loaded() (map[string]LoadedModule, error) { return nil, ErrNotLinux }

// Builtin implements Kernel; nothing is built in where nothing loads.
func (LinuxKernel) Builtin(string) bool { return false }

// Load implements Kernel; it fails with ErrNotLinux.
func (LinuxKernel) Load(*os.File, string, bool) error { return ErrNotLinux }

// Unload implements Kernel; it fails with ErrNotLinux.
func (LinuxKernel) Unload(string) error { return ErrNotLinux }
