//go:build linux

// It uses the trees of native_test.go.

package node_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/loader/node/fake"
)

// imageWithTree lays out an extracted image: the tree of chainTree under
// /opt, and a firmware directory.
func imageWithTree(t *testing.T) (string, *v1beta1.ModuleConfig) {
	t.Helper()
	tree := chainTree(t) // built under its own root: reuse it as <image>/opt
	image := t.TempDir()
	require.NoError(t, os.Rename(tree.Root, filepath.Join(image, "opt")))
	fw := filepath.Join(image, "firmware", "acme")
	require.NoError(t, os.MkdirAll(fw, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(fw, "nic.bin"), []byte("FW"), 0o644))
	cfg, err := v1beta1.DecodeModuleConfig([]byte(`
kernelVersion: ` + kver + `
containerImage: registry.example.com/acme/nic:` + kver + `
inTreeModuleToRemove: old_nic
modprobe:
  moduleName: nic-drv
  parameters: [debug=1]
  firmwarePath: /firmware
`))
	require.NoError(t, err)
	return image, cfg
}

func TestWorkerLoadUnload(t *testing.T) {
	image, cfg := imageWithTree(t)
	assert.Equal(t, "/opt", cfg.Modprobe.DirName, "dirName defaults to /opt")
	k := fake.NewKernel(kver)
	k.Preload("old_nic")
	hostFW := filepath.Join(t.TempDir(), "lib", "firmware")
	sys := t.TempDir()
	param := filepath.Join(sys, "module", "firmware_class", "parameters", "path")
	require.NoError(t, os.MkdirAll(filepath.Dir(param), 0o755))
	require.NoError(t, os.WriteFile(param, []byte("\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(hostFW, "other"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(hostFW, "other", "keep.bin"), []byte("K"), 0o644))

	w := worker(t, k, node.WithFirmwareHostPath(hostFW), node.WithSetFirmwareClassPath(true), node.WithSysRoot(sys))
	res, err := w.Load(context.Background(), cfg, image)
	require.NoError(t, err)
	assert.Equal(t, []string{"old_nic", "core", "helper", "crc", "nic_drv", "post_mod"}, res.Changed)
	assert.Contains(t, k.Events(), "load nic_drv debug=1")
	got, err := os.ReadFile(filepath.Join(hostFW, "acme", "nic.bin"))
	require.NoError(t, err)
	assert.Equal(t, "FW", string(got))
	p, _ := os.ReadFile(param)
	assert.Equal(t, hostFW, string(p))

	res, err = w.Unload(context.Background(), cfg, image)
	require.NoError(t, err)
	assert.Equal(t, []string{"post_mod", "nic_drv", "crc", "helper", "core"}, res.Changed)
	_, err = os.Stat(filepath.Join(hostFW, "acme", "nic.bin"))
	assert.True(t, os.IsNotExist(err), "our firmware is removed")
	_, err = os.Stat(filepath.Join(hostFW, "other", "keep.bin"))
	assert.NoError(t, err, "other firmware stays")
}

func TestWorkerBadInput(t *testing.T) {
	image, cfg := imageWithTree(t)
	k := fake.NewKernel(kver)
	hostFW := t.TempDir()
	w := worker(t, k, node.WithFirmwareHostPath(hostFW))

	var err error
	// A module file that is not ELF: a clear error, nothing loaded.
	dir := filepath.Join(image, "opt", "lib", "modules", kver)
	// helper comes second: core, which comes first, must not be loaded
	// either, since every file is checked before any is loaded.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kernel", "helper.ko"), []byte("#!/bin/sh\n"), 0o644))
	_, err = w.Load(context.Background(), cfg, image)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "load helper")
	assert.Contains(t, err.Error(), "not a kernel module")
	loaded, _ := k.Loaded()
	assert.Empty(t, loaded, "the node is left as it was")
	_, err = os.Stat(filepath.Join(hostFW, "acme", "nic.bin"))
	assert.True(t, os.IsNotExist(err), "firmware is copied only once every module passed its checks")

	// No modules.dep.bin.
	require.NoError(t, os.Remove(filepath.Join(dir, "modules.dep.bin")))
	_, err = w.Load(context.Background(), cfg, image)
	assert.ErrorContains(t, err, "modules.dep.bin")
	assert.ErrorContains(t, err, "kmm depmod -b")
}

// TestWorkerPathsStayInTheImage (issue 17): a config whose firmwarePath or
// dirName leaves the image fails before the worker touches anything; it
// once deleted every file of the host firmware directory on unload.
func TestWorkerPathsStayInTheImage(t *testing.T) {
	image, cfg := imageWithTree(t)
	hostFW := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(hostFW, "other.bin"), []byte("K"), 0o644))
	rel, err := filepath.Rel(image, hostFW)
	require.NoError(t, err)
	k := fake.NewKernel(kver)
	k.Preload("old_nic")
	sys := t.TempDir()
	param := filepath.Join(sys, "module", "firmware_class", "parameters", "path")
	require.NoError(t, os.MkdirAll(filepath.Dir(param), 0o755))
	require.NoError(t, os.WriteFile(param, []byte("\n"), 0o644))
	w := worker(t, k, node.WithFirmwareHostPath(hostFW), node.WithSetFirmwareClassPath(true), node.WithSysRoot(sys))

	bad := *cfg
	bad.Modprobe.FirmwarePath = "/" + rel
	_, err = w.Unload(context.Background(), &bad, image)
	require.ErrorIs(t, err, node.ErrConfig)
	assert.Contains(t, err.Error(), `modprobe.firmwarePath: Invalid value: "/`+rel+`": must not contain "..": the path must stay inside the image`)
	_, err = os.Stat(filepath.Join(hostFW, "other.bin"))
	assert.NoError(t, err, "the host's firmware is untouched")

	bad = *cfg
	bad.Modprobe.DirName = "/opt/../../lib"
	_, err = w.Load(context.Background(), &bad, image)
	require.ErrorIs(t, err, node.ErrConfig)
	assert.Contains(t, err.Error(), `modprobe.dirName: Invalid value: "/opt/../../lib": must not contain ".."`)
	bad = *cfg
	bad.Modprobe.FirmwarePath = "firmware"
	_, err = w.Load(context.Background(), &bad, image)
	assert.ErrorContains(t, err, `modprobe.firmwarePath: Invalid value: "firmware": must be an absolute path in the image`)
	assert.Empty(t, k.Events(), "old_nic is still loaded, nothing else was")
	p, _ := os.ReadFile(param)
	assert.Equal(t, "\n", string(p), "the firmware search path is untouched")
	entries, _ := os.ReadDir(hostFW)
	assert.Len(t, entries, 1, "no firmware was copied")
}

// TestWorkerModprobeArgs runs args and rawArgs as modprobe would.
func TestWorkerModprobeArgs(t *testing.T) {
	ctx := context.Background()
	image, base := imageWithTree(t)
	base.InTreeModuleToRemove = ""
	base.Modprobe.FirmwarePath = ""
	host := chainTree(t) // the host's own /lib/modules/<kver>, for rawArgs without -d
	newWorker := func() (*node.Worker, *fake.Kernel) {
		k := fake.NewKernel(kver)
		return worker(t, k, node.WithFirmwareHostPath(t.TempDir()), node.WithHostRoot(host.Root)), k
	}
	with := func(f func(c *v1beta1.ModuleConfig)) *v1beta1.ModuleConfig {
		c := *base
		f(&c)
		return &c
	}

	t.Run("args --first-time", func(t *testing.T) {
		w, k := newWorker()
		cfg := with(func(c *v1beta1.ModuleConfig) {
			c.Modprobe.Args = &v1beta1.ModprobeArgs{Load: []string{"--first-time", "-q"}, Unload: []string{"--first-time"}}
		})
		_, err := w.Load(ctx, cfg, image)
		require.NoError(t, err)
		_, err = w.Load(ctx, cfg, image)
		require.ErrorIs(t, err, node.ErrFirstTime, "a second load has nothing to do")
		assert.Contains(t, err.Error(), "load nic_drv")
		_, err = w.Unload(ctx, cfg, image)
		require.NoError(t, err)
		_, err = w.Unload(ctx, cfg, image)
		require.ErrorIs(t, err, node.ErrFirstTime)
		assert.Contains(t, err.Error(), "unload nic_drv: not in the kernel (modprobe --first-time)")
		assert.Len(t, k.Events(), 10, "5 loads and 5 unloads: %v", k.Events())
	})

	t.Run("args -a loads more modules", func(t *testing.T) {
		w, k := newWorker()
		cfg := with(func(c *v1beta1.ModuleConfig) {
			c.Modprobe.Parameters = nil
			c.Modprobe.Args = &v1beta1.ModprobeArgs{Load: []string{"-a", "other"}, Unload: []string{"other"}}
		})
		res, err := w.Load(ctx, cfg, image)
		require.NoError(t, err)
		assert.Equal(t, []string{"core", "other", "helper", "crc", "nic_drv", "post_mod"}, res.Changed, "-a other nic-drv: other first, as on the command line, then nic-drv")
		res, err = w.Unload(ctx, cfg, image)
		require.NoError(t, err)
		assert.Equal(t, []string{"other", "post_mod", "nic_drv", "crc", "helper", "core"}, res.Changed)
		loaded, _ := k.Loaded()
		assert.Empty(t, loaded)
	})

	t.Run("rawArgs in the image", func(t *testing.T) {
		w, k := newWorker()
		cfg := with(func(c *v1beta1.ModuleConfig) {
			c.Modprobe = v1beta1.ModprobeSpec{DirName: "/opt", RawArgs: &v1beta1.ModprobeArgs{
				Load:   []string{"-v", "--dirname=/tmp/opt", "nic-drv", "who=big world", "debug"},
				Unload: []string{"-rv", "-d", "/tmp/opt/", "nic-drv", "post-mod"},
			}}
		})
		_, err := w.Load(ctx, cfg, image)
		require.NoError(t, err)
		assert.Contains(t, k.Events(), `load nic_drv who="big world" debug`)
		res, err := w.Unload(ctx, cfg, image)
		require.NoError(t, err)
		assert.Equal(t, []string{"post_mod", "nic_drv", "crc", "helper", "core"}, res.Changed)
		assert.Empty(t, res.Skipped, "post_mod went with nic_drv (a soft dependency) before its own turn")
	})

	t.Run("rawArgs without -d load the host's modules", func(t *testing.T) {
		w, k := newWorker()
		cfg := with(func(c *v1beta1.ModuleConfig) {
			c.KernelVersion = ""
			c.Modprobe = v1beta1.ModprobeSpec{DirName: "/opt", RawArgs: &v1beta1.ModprobeArgs{Load: []string{"other"}, Unload: []string{"-r", "other"}}}
		})
		res, err := w.Load(ctx, cfg, t.TempDir()) // an empty image: nothing comes from it
		require.NoError(t, err)
		assert.Equal(t, []string{"core", "other"}, res.Changed)
		assert.Equal(t, []string{"load core", "load other"}, k.Events())
		_, err = w.Unload(ctx, cfg, t.TempDir())
		require.NoError(t, err)
	})

	t.Run("a config without kernelVersion uses the running kernel", func(t *testing.T) {
		w, _ := newWorker()
		cfg := with(func(c *v1beta1.ModuleConfig) { c.KernelVersion = "" })
		res, err := w.Load(ctx, cfg, image)
		require.NoError(t, err)
		assert.Contains(t, res.Changed, "nic_drv")
	})

	t.Run("rawArgs the worker cannot run fail before anything changes", func(t *testing.T) {
		w, k := newWorker()
		k.Preload("old_nic")
		cfg := with(func(c *v1beta1.ModuleConfig) {
			c.InTreeModuleToRemove = "old_nic"
			c.Modprobe = v1beta1.ModprobeSpec{DirName: "/opt", RawArgs: &v1beta1.ModprobeArgs{Load: []string{"-n", "nic-drv"}, Unload: []string{"nic-drv"}}}
		})
		_, err := w.Load(ctx, cfg, image)
		require.ErrorIs(t, err, node.ErrConfig)
		assert.Contains(t, err.Error(), `modprobe.rawArgs.load[0]: Invalid value: "-n": modprobe option -n: it only prints or looks up`)
		_, err = w.Unload(ctx, cfg, image)
		assert.ErrorContains(t, err, `modprobe.rawArgs.unload: Invalid value: ["nic-drv"]: the unload arguments must remove modules: add -r`)
		assert.Empty(t, k.Events())
	})
}
