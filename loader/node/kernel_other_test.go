//go:build !linux

package node_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/loader/node"
)

// TestLinuxKernelElsewhere: off Linux, the running kernel is refused with
// ErrNotLinux, and a load says so instead of half-working.
func TestLinuxKernelElsewhere(t *testing.T) {
	var k node.LinuxKernel
	_, err := k.Release()
	assert.ErrorIs(t, err, node.ErrNotLinux)
	_, err = k.Loaded()
	assert.ErrorIs(t, err, node.ErrNotLinux)
	assert.ErrorIs(t, k.Unload("nic"), node.ErrNotLinux)
	_, err = k.Vermagic()
	assert.ErrorIs(t, err, node.ErrNotLinux)
	f, err := os.CreateTemp(t.TempDir(), "nic.ko")
	require.NoError(t, err)
	defer f.Close()
	err = k.Load(f, "", false)
	assert.ErrorIs(t, err, node.ErrNotLinux)
	assert.EqualError(t, err, "loading kernel modules works only on Linux")
	assert.False(t, k.Builtin("nic"))
}
