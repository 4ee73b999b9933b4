//go:build linux

package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/loader/node/fake"
	"github.com/kmmkit/kmmkit/reason"
)

// TestLinuxKernelBuild: srcversion and version come from sysfs, a missing
// file is an unknown field, and an oversized one is refused.
func TestLinuxKernelBuild(t *testing.T) {
	sys := t.TempDir()
	write := func(name, file, content string) {
		dir := filepath.Join(sys, "module", name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(content), 0o444))
	}
	write("both", "srcversion", "0123456789ABCDEF0123456\n")
	write("both", "version", "1.2.3\n")
	write("src", "srcversion", "ABC\n")
	write("none", "refcnt", "0\n")
	write("huge", "srcversion", strings.Repeat("A", 257))
	k := node.LinuxKernel{SysRoot: sys}

	for name, want := range map[string]node.Build{
		"both":   {SrcVersion: "0123456789ABCDEF0123456", Version: "1.2.3"},
		"src":    {SrcVersion: "ABC"},
		"none":   {},
		"absent": {},
	} {
		b, err := k.Build(name)
		require.NoError(t, err, name)
		assert.Equal(t, want, b, name)
	}
	_, err := k.Build("huge")
	assert.ErrorContains(t, err, "reading the srcversion of huge: ")
	assert.ErrorContains(t, err, "larger than 256 bytes")
}

// buildTree2 is a tree whose nic-drv (needing core) has srcversion
// NIC2 and version 2.0, and whose core has srcversion CORE2.
func buildTree2(t *testing.T) *node.Tree {
	return buildTree(t, []mod{
		{path: "kernel/core.ko", exports: []string{"core_fn"}, info: []string{"srcversion=CORE2"}},
		{path: "extra/nic-drv.ko", needs: []string{"core_fn"}, info: []string{"version=2.0", "srcversion=NIC2"}},
	}, nil)
}

// TestLoadChecksBuild: a module already loaded is skipped when it is the
// image's build, and refused, before anything changes, when the kernel
// runs another; a module just loaded must run the file's build.
func TestLoadChecksBuild(t *testing.T) {
	ctx := context.Background()
	tree := buildTree2(t)
	nicPath := filepath.Join(tree.Root, "lib/modules", kver, "extra/nic-drv.ko")
	corePath := filepath.Join(tree.Root, "lib/modules", kver, "kernel/core.ko")
	req := node.Request{Tree: tree, Module: "nic-drv"}

	t.Run("same build", func(t *testing.T) {
		k := fake.NewKernel(kver)
		n := newNative(t, k)
		res, err := n.Load(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, []string{"core", "nic_drv"}, res.Changed)
		assert.Equal(t, "NIC2", res.SrcVersion, "the live srcversion of the target")
		res, err = n.Load(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, []string{"core", "nic_drv"}, res.Skipped)
		assert.Empty(t, res.Changed)
		assert.Equal(t, "NIC2", res.SrcVersion)
	})

	t.Run("other build of the target", func(t *testing.T) {
		k := fake.NewKernel(kver)
		k.Preload("core")
		k.Preload("nic_drv")
		k.SetBuild("nic_drv", node.Build{SrcVersion: "NIC1", Version: "2.0"})
		_, err := newNative(t, k).Load(ctx, req)
		require.Error(t, err)
		assert.Equal(t, "load nic_drv ("+nicPath+"): the kernel runs nic_drv srcversion NIC1, the image's file has srcversion NIC2: "+
			"another build of the module is loaded: unload it first (or let kmmkit's upgrade do it)", err.Error())
		assert.Equal(t, reason.ModuleBuildMismatch, reason.Of(err))
		var be *node.BuildMismatchError
		require.ErrorAs(t, err, &be)
		assert.Equal(t, node.BuildMismatchError{Module: "nic_drv", Field: "srcversion",
			File: node.Build{SrcVersion: "NIC2", Version: "2.0"}, Loaded: node.Build{SrcVersion: "NIC1", Version: "2.0"}}, *be)
		assert.Empty(t, k.Events(), "nothing changed")
	})

	t.Run("other build of a dependency", func(t *testing.T) {
		k := fake.NewKernel(kver)
		k.Preload("core")
		k.SetBuild("core", node.Build{SrcVersion: "CORE1"})
		_, err := newNative(t, k).Load(ctx, req)
		assert.Equal(t, "load core ("+corePath+"): the kernel runs core srcversion CORE1, the image's file has srcversion CORE2: "+
			"another build of the module is loaded: unload it first (or let kmmkit's upgrade do it)", err.Error())
		assert.Equal(t, reason.ModuleBuildMismatch, reason.Of(err))
		assert.Empty(t, k.Events(), "nic_drv was not loaded on the old core")
	})

	t.Run("srcversion unknown: version", func(t *testing.T) {
		k := fake.NewKernel(kver)
		k.Preload("core")
		k.Preload("nic_drv")
		k.SetBuild("nic_drv", node.Build{Version: "2.0"})
		res, err := newNative(t, k).Load(ctx, req)
		require.NoError(t, err, "the same version")
		assert.Equal(t, []string{"core", "nic_drv"}, res.Skipped)
		assert.Empty(t, res.SrcVersion)

		k.SetBuild("nic_drv", node.Build{Version: "1.0"})
		_, err = newNative(t, k).Load(ctx, req)
		assert.Equal(t, "load nic_drv ("+nicPath+"): the kernel runs nic_drv version 1.0, the image's file has version 2.0: "+
			"another build of the module is loaded: unload it first (or let kmmkit's upgrade do it)", err.Error())
		assert.Equal(t, reason.ModuleBuildMismatch, reason.Of(err))
	})

	t.Run("unknown: no check", func(t *testing.T) {
		k := fake.NewKernel(kver)
		k.Preload("core") // the fake's Preload shows no srcversion
		k.Preload("nic_drv")
		res, err := newNative(t, k).Load(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, []string{"core", "nic_drv"}, res.Skipped)
		k.SetBuild("nic_drv", node.Build{SrcVersion: "NIC1"}) // no version in the kernel's
		tree := buildTree(t, []mod{{path: "kernel/core.ko", exports: []string{"core_fn"}},
			{path: "extra/nic-drv.ko", needs: []string{"core_fn"}, info: []string{"version=2.0"}}}, nil)
		_, err = newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
		require.NoError(t, err, "the file has no srcversion and the kernel no version: nothing to compare")
		assert.Empty(t, k.Events())
	})

	t.Run("in-tree module to remove is not checked", func(t *testing.T) {
		k := fake.NewKernel(kver)
		k.Preload("nic_drv")
		k.SetBuild("nic_drv", node.Build{SrcVersion: "NIC1"})
		_, err := newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "nic-drv", InTreeModulesToRemove: []string{"nic_drv"}})
		require.Error(t, err, "the fake keeps reporting NIC1 for the reloaded module")
		assert.Equal(t, []string{"unload nic_drv", "load core", "load nic_drv", "unload nic_drv", "unload core"}, k.Events(),
			"the old build was removed, the new one loaded, then checked and rolled back")
		assert.Equal(t, reason.ModuleBuildMismatch, reason.Of(err))
		assert.ErrorContains(t, err, "srcversion NIC1, the image's file has srcversion NIC2")
		assert.ErrorContains(t, err, "; rolled back: nic_drv, core")
	})
}
