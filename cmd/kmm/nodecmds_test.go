package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestNodeCommands: kmm has the worker binary's commands too (package
// internal/nodecmd tests them).
func TestNodeCommands(t *testing.T) {
	code, stdout, _ := runCmd(t, "", "depmod", "-V")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "compatible with kmod version 30")
	code, _, stderr := runCmd(t, "", "worker", "kmod", "unload")
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "kmm worker kmod unload: want exactly one argument, the config file; got 0")
	code, _, stderr = runCmd(t, "", "worker", "load", "--config", "/nonexistent/config.yaml")
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "kmm worker load: open /nonexistent/config.yaml: no such file or directory")
}
