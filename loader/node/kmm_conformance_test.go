//go:build linux

// The hints of module signature errors (ENOKEY, EKEYREJECTED) exist only
// on Linux.

package node_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/kmmconformance"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/loader/node/fake"
)

// The KMM files whose cases follow (kubernetes-sigs/kernel-module-management);
// the worker Pod's and the NodeModulesConfig reconciler's are in
// loader/kmm_conformance_test.go.
const (
	kmmWorker = "internal/worker/worker_test.go: "
	kmmConfig = "internal/worker/config_test.go: "
)

// --- the worker ---

// workerImage lays out an extracted kmod image: chainTree's modules under
// /opt, and KMM's firmware test tree under /firmwareDir.
func workerImage(t *testing.T) string {
	t.Helper()
	tree := chainTree(t)
	image := t.TempDir()
	require.NoError(t, os.Rename(tree.Root, filepath.Join(image, "opt")))
	fw := filepath.Join(image, "firmwareDir")
	require.NoError(t, os.MkdirAll(filepath.Join(fw, "binDir"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(fw, "firwmwareFile1"), []byte("some data 1"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(fw, "binDir", "firwmwareFile2"), []byte("some data 2"), 0o644))
	return image
}

func workerConfig(mp v1beta1.ModprobeSpec) *v1beta1.ModuleConfig {
	if mp.DirName == "" {
		mp.DirName = "/opt"
	}
	return &v1beta1.ModuleConfig{KernelVersion: kver, ContainerImage: "registry.example.com/nic:v1", Modprobe: mp}
}

func newWorker(t *testing.T, k *fake.Kernel, hostFW string) *node.Worker {
	return worker(t, k, node.WithFirmwareHostPath(hostFW))
}

// rawArgsOnly is KMM's case of rawArgs with one direction only: the
// worker refuses the config before it touches the node, and runs one
// with both directions as modprobe would.
func rawArgsOnly(unload bool) func(t *testing.T) {
	return func(t *testing.T) {
		image := workerImage(t)
		k := fake.NewKernel(kver)
		w := newWorker(t, k, t.TempDir())
		args := &v1beta1.ModprobeArgs{Load: []string{"a", "b", "c"}}
		if unload {
			args = &v1beta1.ModprobeArgs{Unload: []string{"a", "b", "c"}}
		}
		cfg := workerConfig(v1beta1.ModprobeSpec{RawArgs: args})
		var err error
		if unload {
			_, err = w.Unload(context.Background(), cfg, image)
		} else {
			_, err = w.Load(context.Background(), cfg, image)
		}
		require.ErrorIs(t, err, node.ErrConfig)
		assert.Contains(t, err.Error(), "modprobe.rawArgs.", "the error names the field")
		assert.Empty(t, k.Events(), "nothing changed on the node")

		cfg = workerConfig(v1beta1.ModprobeSpec{RawArgs: &v1beta1.ModprobeArgs{
			Load: []string{"-d", "/tmp/opt", "nic-drv"}, Unload: []string{"-r", "-d", "/tmp/opt", "nic-drv"}}})
		_, err = w.Load(context.Background(), cfg, image)
		require.NoError(t, err)
		assert.Contains(t, k.Events(), "load nic_drv")
		_, err = w.Unload(context.Background(), cfg, image)
		require.NoError(t, err)
		assert.Contains(t, k.Events(), "unload nic_drv")
	}
}

func firmwareClassPath(old string) func(t *testing.T) {
	return func(t *testing.T) {
		sys := t.TempDir()
		p := filepath.Join(sys, "module", "firmware_class", "parameters", "path")
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(old), 0o644))
		require.NoError(t, node.SetFirmwareClassPath(sys, "/new/value"))
		got, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, "/new/value", string(got))
	}
}

func TestKMMConformanceWorker(t *testing.T) {
	ctx := context.Background()
	kmmconformance.Run(t, []kmmconformance.Case{
		{KMM: kmmWorker + "worker_LoadKmod: should return an error if modprobe failed", Check: func(t *testing.T) {
			k := fake.NewKernel(kver)
			k.FailLoad("nic_drv", syscall.ENOKEY)
			_, err := newWorker(t, k, t.TempDir()).Load(ctx, workerConfig(v1beta1.ModprobeSpec{ModuleName: "nic-drv"}), workerImage(t))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "nic_drv")
			loaded, _ := k.Loaded()
			assert.Empty(t, loaded, "what was loaded before the failure is rolled back")
		}},
		{KMM: kmmWorker + "worker_LoadKmod: should remove present-on-host in-tree module if configured", Check: func(t *testing.T) {
			k := fake.NewKernel(kver)
			k.Preload("intree1")
			k.Preload("intree3")
			cfg := workerConfig(v1beta1.ModprobeSpec{ModuleName: "nic-drv"})
			cfg.InTreeModulesToRemove = []string{"intree1", "intree2", "intree3", "intree4"}
			res, err := newWorker(t, k, t.TempDir()).Load(ctx, cfg, workerImage(t))
			require.NoError(t, err)
			assert.Equal(t, []string{"intree1", "intree3"}, res.Changed[:2], "the present ones are removed first; the others are skipped")
			assert.Equal(t, []string{"unload intree1", "unload intree3"}, k.Events()[:2])
			assert.Contains(t, res.Changed, "nic_drv")
		}},
		{KMM: kmmWorker + "worker_LoadKmod: should use deprecated InTreeModuleToRemove if configured", Check: func(t *testing.T) {
			k := fake.NewKernel(kver)
			k.Preload("intreeToRemove")
			cfg := workerConfig(v1beta1.ModprobeSpec{ModuleName: "nic-drv"})
			cfg.InTreeModuleToRemove = "intreeToRemove"
			_, err := newWorker(t, k, t.TempDir()).Load(ctx, cfg, workerImage(t))
			require.NoError(t, err)
			assert.Equal(t, "unload intreeToRemove", k.Events()[0])
		}},
		{KMM: kmmWorker + "worker_LoadKmod: should copy all the firmware files/directories if configured", Check: func(t *testing.T) {
			host := t.TempDir()
			_, err := newWorker(t, fake.NewKernel(kver), host).Load(ctx, workerConfig(v1beta1.ModprobeSpec{ModuleName: "nic-drv", FirmwarePath: "/firmwareDir"}), workerImage(t))
			require.NoError(t, err)
			for _, f := range []string{"binDir", "binDir/firwmwareFile2", "firwmwareFile1"} {
				_, err := os.Stat(filepath.Join(host, f))
				assert.NoError(t, err, f)
			}
		}},
		{KMM: kmmWorker + "worker_LoadKmod: should use rawArgs if they are defined",
			Differs: "The worker checks its config by the Module's rules", Check: rawArgsOnly(false)},
		{KMM: kmmWorker + "worker_LoadKmod: should use all modprobe settings", Check: func(t *testing.T) {
			mp := v1beta1.ModprobeSpec{ModuleName: "test", Parameters: []string{"key0=value0", "key1=value1"}, DirName: "/dir",
				Args: &v1beta1.ModprobeArgs{Load: []string{"a", "b", "c"}}}
			assert.Equal(t, []string{"-vd", "/tmp/dir", "a", "b", "c", "test", "key0=value0", "key1=value1"}, mp.LoadArgs())
		}},
		{KMM: kmmWorker + "worker_SetFirmwareClassPath: should return an error if the sysfile does not exist", Check: func(t *testing.T) {
			assert.ErrorContains(t, node.SetFirmwareClassPath(filepath.Join(t.TempDir(), "non/existent"), "some value"), "reading the firmware search path")
		}},
		{KMM: kmmWorker + "worker_SetFirmwareClassPath: should work as expected: empty old value", Check: firmwareClassPath("")},
		{KMM: kmmWorker + "worker_SetFirmwareClassPath: should work as expected: old value not empty", Check: firmwareClassPath("old value not empty")},
		{KMM: kmmWorker + "worker_UnloadKmod: should return an error if modprobe failed", Check: func(t *testing.T) {
			k := fake.NewKernel(kver)
			image := workerImage(t)
			w := newWorker(t, k, t.TempDir())
			cfg := workerConfig(v1beta1.ModprobeSpec{ModuleName: "nic-drv"})
			_, err := w.Load(ctx, cfg, image)
			require.NoError(t, err)
			k.FailUnload("nic_drv", syscall.EAGAIN)
			_, err = w.Unload(ctx, cfg, image)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "nic_drv")
		}},
		{KMM: kmmWorker + "worker_UnloadKmod: should use rawArgs if they are defined",
			Differs: "The worker checks its config by the Module's rules", Check: rawArgsOnly(true)},
		{KMM: kmmWorker + "worker_UnloadKmod: should use all modprobe settings", Check: func(t *testing.T) {
			mp := v1beta1.ModprobeSpec{ModuleName: "test", DirName: "/dir", Args: &v1beta1.ModprobeArgs{Unload: []string{"a", "b", "c"}}}
			assert.Equal(t, []string{"-rvd", "/tmp/dir", "a", "b", "c", "test"}, mp.UnloadArgs())
		}},
		{KMM: kmmWorker + "worker_UnloadKmod: should use ModulesLoadingOrder when set", Check: func(t *testing.T) {
			mp := v1beta1.ModprobeSpec{ModuleName: "test", DirName: "/dir", ModulesLoadingOrder: []string{"a", "b", "c"}}
			assert.Equal(t, []string{"-rvd", "/tmp/dir", "a", "b", "c"}, mp.UnloadArgs())
			// and the worker unloads every module of the order.
			k := fake.NewKernel(kver)
			image := workerImage(t)
			w := newWorker(t, k, t.TempDir())
			cfg := workerConfig(v1beta1.ModprobeSpec{ModuleName: "nic-drv", ModulesLoadingOrder: []string{"nic-drv", "order-b", "order-c"}})
			_, err := w.Load(ctx, cfg, image)
			require.NoError(t, err)
			_, err = w.Unload(ctx, cfg, image)
			require.NoError(t, err)
			loaded, _ := k.Loaded()
			assert.Empty(t, loaded)
		}},
		{KMM: kmmWorker + "worker_UnloadKmod: should remove all firmware file only", Check: func(t *testing.T) {
			host := t.TempDir()
			image := workerImage(t)
			w := newWorker(t, fake.NewKernel(kver), host)
			cfg := workerConfig(v1beta1.ModprobeSpec{ModuleName: "nic-drv", FirmwarePath: "/firmwareDir"})
			_, err := w.Load(ctx, cfg, image)
			require.NoError(t, err)
			_, err = w.Unload(ctx, cfg, image)
			require.NoError(t, err)
			for _, f := range []string{"binDir/firwmwareFile2", "firwmwareFile1"} {
				_, err := os.Stat(filepath.Join(host, f))
				assert.True(t, os.IsNotExist(err), "%s removed", f)
			}
			st, err := os.Stat(filepath.Join(host, "binDir"))
			require.NoError(t, err, "directories stay")
			assert.True(t, st.IsDir())
		}},
		{KMM: kmmConfig + "ConfigHelper_ReadConfigFile: should populate the ModuleConfig correctly", Check: func(t *testing.T) {
			// KMM's testdata/config.yaml, which has no kernelVersion.
			cfg, err := v1beta1.DecodeModuleConfig([]byte(`containerImage: registry.local/org/img:tag
insecurePull: true
inTreeModulesToRemove: [intree1, intree2]
modprobe:
  moduleName: test
  parameters: [key0=value0, key1=value1]
  dirName: /path
  args:
    load: [load, args]
    unload: [unload, args]
  rawArgs:
    load: [load, rawargs]
    unload: [unload, rawargs]
  firmwarePath: /some/path
  modulesLoadingOrder: [mod1, mod2]
`))
			require.NoError(t, err)
			assert.Equal(t, v1beta1.ModuleConfig{
				ContainerImage: "registry.local/org/img:tag", InsecurePull: true, InTreeModulesToRemove: []string{"intree1", "intree2"},
				Modprobe: v1beta1.ModprobeSpec{
					ModuleName: "test", Parameters: []string{"key0=value0", "key1=value1"}, DirName: "/path",
					Args:         &v1beta1.ModprobeArgs{Load: []string{"load", "args"}, Unload: []string{"unload", "args"}},
					RawArgs:      &v1beta1.ModprobeArgs{Load: []string{"load", "rawargs"}, Unload: []string{"unload", "rawargs"}},
					FirmwarePath: "/some/path", ModulesLoadingOrder: []string{"mod1", "mod2"},
				},
			}, *cfg)
		}},
		// Not carried over: cmdlog_test.go (modprobe's output streamed to
		// the log: kmmkit runs no modprobe) and pullsecrets_test.go (KMM's
		// reader of pull secrets the worker no longer uses; kmmkit's
		// worker reads its pull secret in cmd/kmm).
	})
}
