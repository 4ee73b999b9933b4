package loader_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/loader/fake"
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

	w := &loader.Worker{Native: newNative(t, k), FirmwareHostPath: hostFW, SetFirmwareClassPath: true, SysRoot: sys}
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
	w := &loader.Worker{Native: newNative(t, k), FirmwareHostPath: t.TempDir()}

	raw := *cfg
	raw.Modprobe.RawArgs = &v1beta1.ModprobeArgs{Load: []string{"-v", "x"}}
	_, err := w.Load(context.Background(), &raw, image)
	assert.ErrorIs(t, err, loader.ErrRawArgs)

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

	// No modules.dep.bin.
	require.NoError(t, os.Remove(filepath.Join(dir, "modules.dep.bin")))
	_, err = w.Load(context.Background(), cfg, image)
	assert.ErrorContains(t, err, "modules.dep.bin")
	assert.ErrorContains(t, err, "kmm depmod -b")
}
