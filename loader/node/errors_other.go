//go:build !linux

package node

import "syscall"

// signatureHint has nothing to say where modules are not loaded.
func signatureHint(syscall.Errno) string { return "" }
