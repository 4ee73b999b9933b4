package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/loader/node/fake"
	"github.com/kmmkit/kmmkit/reason"
)

// sysfsModule lays out /sys/module/<name> under sys as the kernel does:
// refcnt, and holders/ with a link per module using it (nil holders
// leaves the directory out).
func sysfsModule(t *testing.T, sys, name, refcnt string, holders []string) {
	t.Helper()
	dir := filepath.Join(sys, "module", name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "refcnt"), []byte(refcnt), 0o444))
	if holders == nil {
		return
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "holders"), 0o755))
	for _, h := range holders {
		require.NoError(t, os.Symlink("../../"+h, filepath.Join(dir, "holders", h)))
	}
}

func TestLinuxKernelUsage(t *testing.T) {
	sys := t.TempDir()
	sysfsModule(t, sys, "core", "3\n", []string{"nic_drv", "helper"})
	sysfsModule(t, sys, "loop", "1\n", []string{})
	sysfsModule(t, sys, "idle", "0\n", []string{})
	sysfsModule(t, sys, "noholders", "0\n", nil)
	sysfsModule(t, sys, "garbage", "many\n", []string{})
	sysfsModule(t, sys, "negative", "-1\n", []string{})
	sysfsModule(t, sys, "huge", strings.Repeat("1", 4096), []string{})
	k := node.LinuxKernel{SysRoot: sys}

	u, err := k.Usage("core")
	require.NoError(t, err)
	assert.Equal(t, node.Usage{RefCount: 3, Holders: []string{"helper", "nic_drv"}}, u, "holders sorted")
	assert.True(t, u.InUse())
	u, err = k.Usage("loop")
	require.NoError(t, err)
	assert.Equal(t, node.Usage{RefCount: 1}, u)
	assert.True(t, u.InUse(), "a reference without a holder is a use")
	for _, idle := range []string{"idle", "noholders"} {
		u, err = k.Usage(idle)
		require.NoError(t, err, idle)
		assert.Equal(t, node.Usage{}, u, idle)
		assert.False(t, u.InUse(), idle)
	}
	for name, want := range map[string]string{
		"garbage":  `the reference count of garbage is "many", not a count`,
		"negative": `the reference count of negative is "-1", not a count`,
		"huge":     "reading the reference count of huge: more than 32 bytes",
		"absent":   "reading the reference count of absent: open " + filepath.Join(sys, "module", "absent", "refcnt"),
	} {
		_, err := k.Usage(name)
		assert.ErrorContains(t, err, want, name)
	}
}

// sysfsKernel is the fake kernel with /sys/module read from a directory,
// which may say more than /proc/modules (the fake's Loaded).
type sysfsKernel struct {
	*fake.Kernel
	sys node.LinuxKernel
}

func (k sysfsKernel) Usage(name string) (node.Usage, error) { return k.sys.Usage(name) }

// TestUnloadAsksSysfs: the loader goes by the kernel's view in sysfs, the
// reference count and the holders, and names them.
func TestUnloadAsksSysfs(t *testing.T) {
	tree := chainTree(t)
	k := fake.NewKernel(kver)
	k.Preload("core")
	sys := t.TempDir()
	sysfsModule(t, sys, "core", "3\n", []string{"rdma", "other"})
	n := newNative(t, sysfsKernel{Kernel: k, sys: node.LinuxKernel{SysRoot: sys}})
	_, err := n.Unload(context.Background(), node.Request{Tree: tree, Module: "core"})
	assert.Equal(t, "unload core: in use by other, rdma (reference count 3: also a process holding its device, or another kernel user)", err.Error())
	assert.Equal(t, reason.ModuleInUse, reason.Of(err))
	var ie *node.InUseError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, node.InUseError{Module: "core", Usage: node.Usage{RefCount: 3, Holders: []string{"other", "rdma"}}}, *ie)
	assert.ErrorIs(t, err, syscall.EBUSY)
	assert.Empty(t, k.Events(), "nothing was unloaded")
}

func TestUnloadInUse(t *testing.T) {
	tree := chainTree(t)
	ctx := context.Background()
	k := fake.NewKernel(kver)
	n := newNative(t, k)
	_, err := n.Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	loadedEvents := len(k.Events())

	// A process holds nic_drv's device: a reference and no holder.
	require.True(t, k.Hold("nic_drv"))
	_, err = n.Unload(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	assert.Equal(t, "unload nic_drv: in use (reference count 1): a process holds its device, or another kernel user", err.Error())
	assert.Equal(t, reason.ModuleInUse, reason.Of(err))
	assert.Equal(t, []string{"unload post_mod"}, k.Events()[loadedEvents:], "nic_drv and what it needs stay (its post softdep went first)")
	k.Drop("nic_drv")

	// A dependency in use is left loaded, as modprobe -r leaves it.
	require.True(t, k.Hold("core"))
	res, err := n.Unload(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	assert.Contains(t, res.Skipped, "core")
	assert.NotContains(t, res.Changed, "core")
	k.Drop("core")
	res, err = n.Unload(ctx, node.Request{Tree: tree, Module: "core"})
	require.NoError(t, err)
	assert.Equal(t, []string{"core"}, res.Changed, "once its user is gone, it unloads")
}

// racyKernel takes a reference on a module just before the kernel is
// asked to unload it, as a process opening its device in between would.
type racyKernel struct{ *fake.Kernel }

func (k racyKernel) Unload(name string) error {
	k.Hold(name)
	return k.Kernel.Unload(name)
}

// TestUnloadInUseRace: when the kernel refuses (EAGAIN) a module that was
// free when checked, the error still says by what it is used.
func TestUnloadInUseRace(t *testing.T) {
	tree := chainTree(t)
	k := fake.NewKernel(kver)
	k.Preload("crc")
	_, err := newNative(t, racyKernel{k}).Unload(context.Background(), node.Request{Tree: tree, Module: "crc"})
	assert.Equal(t, "unload crc: in use (reference count 1): a process holds its device, or another kernel user", err.Error())
	assert.Equal(t, reason.ModuleInUse, reason.Of(err))
}

// TestInTreeModuleInUse: an in-tree module to remove that the kernel
// says is in use stops the load before anything changes, with the same
// reason and the module that holds it.
func TestInTreeModuleInUse(t *testing.T) {
	tree := chainTree(t)
	k := fake.NewKernel(kver)
	k.Preload("intree_lib", "intree_nic", "intree_rdma")
	k.Preload("intree_nic")
	k.Preload("intree_rdma")
	_, err := newNative(t, k).Load(context.Background(), node.Request{Tree: tree, Module: "helper", InTreeModulesToRemove: []string{"intree-lib"}})
	assert.Equal(t, "unload intree_lib: in use by intree_nic, intree_rdma: it is in inTreeModulesToRemove: stop what uses it, or leave it out", err.Error())
	assert.Equal(t, reason.ModuleInUse, reason.Of(err))
	assert.Empty(t, k.Events(), "nothing changed")

	// A held dependency of a removed in-tree module stays.
	k = fake.NewKernel(kver)
	k.Preload("intree_nic")
	k.Preload("intree_lib", "intree_nic")
	require.True(t, k.Hold("intree_lib"))
	res, err := newNative(t, k).Load(context.Background(), node.Request{Tree: tree, Module: "helper", InTreeModulesToRemove: []string{"intree-nic"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"intree_nic", "core", "helper"}, res.Changed)
	loaded, _ := k.Loaded()
	assert.Contains(t, loaded, "intree_lib", "still held")
}
