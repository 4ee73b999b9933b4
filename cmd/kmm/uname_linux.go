//go:build linux

package main

import "golang.org/x/sys/unix"

// unameRelease returns the running kernel's release, as uname -r prints it.
func unameRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}
