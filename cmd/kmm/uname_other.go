//go:build !linux

package main

import "errors"

// unameRelease is only available on Linux; elsewhere give the version.
func unameRelease() (string, error) {
	return "", errors.New("no kernel version given and uname is only read on Linux")
}
