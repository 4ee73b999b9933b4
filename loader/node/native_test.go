//go:build linux

// The hints of module signature errors (ENOKEY, EKEYREJECTED) exist only
// on Linux.

package node_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/internal/bombtest"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/loader/node/fake"
	"github.com/kmmkit/kmmkit/reason"
)

const kver = "6.1.0-56-amd64"

// mod is a test module: its exports, what it needs, and more .modinfo.
type mod struct {
	path    string
	exports []string
	needs   []string
	info    []string
	vermag  string
}

// buildTree writes modules, runs our depmod on them and opens the tree.
func buildTree(t *testing.T, mods []mod, extra map[string]string) *node.Tree {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "lib", "modules", kver)
	exporter := map[string]string{}
	for _, m := range mods {
		for _, e := range m.exports {
			exporter[e] = modfile.ModuleName(filepath.Base(m.path))
		}
	}
	for _, m := range mods {
		name := modfile.ModuleName(filepath.Base(m.path))
		vm := m.vermag
		if vm == "" {
			vm = kver
		}
		var deps []string
		for _, n := range m.needs {
			deps = append(deps, exporter[n])
		}
		e := elftest.Module{Modinfo: append([]string{"name=" + name, "vermagic=" + vm + " " + fake.DefaultFlags, "depends=" + strings.Join(deps, ",")}, m.info...)}
		for _, x := range m.exports {
			e.Exports = append(e.Exports, elftest.Export{Name: x})
		}
		for _, n := range m.needs {
			e.Needs = append(e.Needs, elftest.Need{Name: n})
		}
		data := e.Bytes()
		if strings.HasSuffix(m.path, ".zst") {
			var b strings.Builder
			w, _ := zstd.NewWriter(&b)
			w.Write(data)
			w.Close()
			data = []byte(b.String())
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, m.path)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, m.path), data, 0o644))
	}
	for name, content := range extra {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: root, KernelVersion: kver, ConfigPaths: []string{}})
	require.NoError(t, err)
	tree, err := node.OpenTree(root, kver)
	require.NoError(t, err)
	return tree
}

// chainTree: nic-drv needs helper and core; helper needs core; a softdep
// brings crc in before and post-mod after.
func chainTree(t *testing.T) *node.Tree {
	return buildTree(t, []mod{
		{path: "kernel/core.ko", exports: []string{"core_fn"}},
		{path: "kernel/helper.ko", exports: []string{"helper_fn"}, needs: []string{"core_fn"}},
		{path: "extra/nic-drv.ko", needs: []string{"helper_fn", "core_fn"}, info: []string{"alias=pci:v00008086d*", "softdep=pre: crc-alias post: post_mod"}},
		{path: "kernel/crc.ko", info: []string{"alias=crc-alias"}},
		{path: "kernel/post_mod.ko"},
		{path: "kernel/other.ko", needs: []string{"core_fn"}},
		{path: "kernel/order-b.ko"},
		{path: "kernel/order-c.ko"},
	}, nil)
}

func names(steps []node.Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Name)
	}
	return out
}

func TestPlan(t *testing.T) {
	tree := chainTree(t)
	steps, err := tree.Plan("nic-drv", []string{"debug=1"}, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"core", "helper", "crc", "nic_drv", "post_mod"}, names(steps),
		"as libkmod: hard dependencies, then the module's soft pre dependencies, the module, its post ones")
	assert.Equal(t, []string{"debug=1"}, steps[3].Params)
	assert.Nil(t, steps[1].Params, "parameters go to the requested module only")
	assert.Equal(t, filepath.Join(tree.Root, "lib/modules", kver, "extra/nic-drv.ko"), steps[3].Path)

	steps, err = tree.Plan("pci:v00008086d00001234", nil, nil)
	require.NoError(t, err)
	assert.Equal(t, "nic_drv", steps[3].Name, "an alias resolves to its module")

	steps, err = tree.Plan("nic_drv", nil, []string{"nic_drv", "order-b", "order_c"})
	require.NoError(t, err)
	assert.Equal(t, []string{"core", "helper", "order_c", "order_b", "nic_drv"}, names(steps),
		"modulesLoadingOrder: the last entry first; as a modprobe.d softdep it replaces the module's own")

	_, err = tree.Plan("nope", nil, nil)
	assert.ErrorIs(t, err, node.ErrModuleNotFound)
}

func newNative(t *testing.T, k node.Kernel) *node.Native {
	t.Helper()
	n, err := node.NewNative(k, node.WithLogger(logr.Discard()))
	require.NoError(t, err)
	return n
}

// worker is a Worker on k with opts, logging nowhere.
func worker(t *testing.T, k node.Kernel, opts ...node.Option) *node.Worker {
	t.Helper()
	w, err := node.NewWorker(k, append([]node.Option{node.WithLogger(logr.Discard())}, opts...)...)
	require.NoError(t, err)
	return w
}

func TestLoadAndUnload(t *testing.T) {
	tree := chainTree(t)
	k := fake.NewKernel(kver)
	n := newNative(t, k)
	ctx := context.Background()
	res, err := n.Load(ctx, node.Request{Tree: tree, Module: "nic-drv", Parameters: []string{"debug=1", "mode=fast"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"core", "helper", "crc", "nic_drv", "post_mod"}, res.Changed)
	assert.Equal(t, []string{"load core", "load helper", "load crc", "load nic_drv debug=1 mode=fast", "load post_mod"}, k.Events())

	res, err = n.Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	assert.Empty(t, res.Changed, "loading twice changes nothing")
	assert.Len(t, res.Skipped, 5)

	// Someone else's module uses core: unloading ours must keep it.
	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "other"})
	require.NoError(t, err)
	before := len(k.Events())
	res, err = n.Unload(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	assert.Equal(t, []string{"unload post_mod", "unload nic_drv", "unload crc", "unload helper"}, k.Events()[before:])
	assert.Contains(t, res.Skipped, "core")
	loaded, _ := k.Loaded()
	assert.Contains(t, loaded, "core")
	assert.Contains(t, loaded, "other")

	_, err = n.Unload(ctx, node.Request{Tree: tree, Module: "core"})
	var le *node.Error
	require.ErrorAs(t, err, &le)
	assert.Equal(t, "unload core: in use by other", err.Error())
	assert.Equal(t, reason.ModuleInUse, reason.Of(err))
}

func TestLoadSkipsBuiltinAndRemovesInTree(t *testing.T) {
	tree := chainTree(t)
	k := fake.NewKernel(kver)
	k.SetBuiltin("core")
	// An in-tree driver and the module only it used.
	k.Preload("intree_nic")
	k.Preload("intree_lib", "intree_nic")
	n := newNative(t, k)
	_, err := n.Load(context.Background(), node.Request{Tree: tree, Module: "helper", InTreeModulesToRemove: []string{"intree-nic"}})
	require.Error(t, err, "helper needs core, which the fake does not load because it is built in")
	assert.Equal(t, []string{"unload intree_nic", "unload intree_lib"}, k.Events()[:2])
}

func TestLoadErrors(t *testing.T) {
	tree := buildTree(t, []mod{
		{path: "kernel/old.ko", vermag: "5.14.0-1"},
		{path: "kernel/unsigned.ko"},
	}, nil)
	k := fake.NewKernel(kver)
	k.FailLoad("unsigned", syscall.ENOKEY)
	n := newNative(t, k)
	ctx := context.Background()

	_, err := n.Load(ctx, node.Request{Tree: tree, Module: "old"})
	require.ErrorIs(t, err, node.ErrVermagic)
	assert.Contains(t, err.Error(), `built for "5.14.0-1", running "6.1.0-56-amd64"`)
	assert.Contains(t, err.Error(), "kernelMappings")
	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "old", SkipVermagicCheck: true})
	require.NoError(t, err)

	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "unsigned"})
	require.ErrorIs(t, err, syscall.ENOKEY)
	assert.Contains(t, err.Error(), "sign it with spec.moduleLoader.container.sign")

	_, err = n.Unload(ctx, node.Request{Tree: tree, Module: "unsigned"})
	require.NoError(t, err, "unloading what is not loaded is a no-op")

	_, err = node.OpenTree(t.TempDir(), kver)
	assert.ErrorContains(t, err, "kmm depmod -b")
}

func TestLoadCompressed(t *testing.T) {
	tree := buildTree(t, []mod{{path: "extra/zmod.ko.zst"}}, nil)
	for _, noDecompress := range []bool{false, true} {
		k := fake.NewKernel(kver)
		if noDecompress {
			k.RefuseCompressed()
		}
		res, err := newNative(t, k).Load(context.Background(), node.Request{Tree: tree, Module: "zmod"})
		require.NoError(t, err, "kernel decompression %v", !noDecompress)
		assert.Equal(t, []string{"zmod"}, res.Changed)
	}
}

// TestLoadRefusesHostileFiles: a module file whose zstd header declares a
// huge window, or a sparse file larger than any module, is refused before
// anything is loaded, naming the file and the limit.
func TestLoadRefusesHostileFiles(t *testing.T) {
	tree := buildTree(t, []mod{{path: "extra/zmod.ko.zst", exports: []string{"z"}}, {path: "extra/big.ko", needs: []string{"z"}}}, nil)
	dir := filepath.Join(tree.Root, "lib", "modules", kver, "extra")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "zmod.ko.zst"), bombtest.ZstdWindow(31, []byte("x")), 0o644))
	k := fake.NewKernel(kver)
	_, err := newNative(t, k).Load(context.Background(), node.Request{Tree: tree, Module: "big"})
	var limit *modfile.LimitError
	require.ErrorAs(t, err, &limit)
	assert.Contains(t, err.Error(), "zmod.ko.zst")
	assert.Contains(t, err.Error(), "over the limit")
	assert.Contains(t, err.Error(), "no kernel module is that large")
	assert.Empty(t, k.Events(), "nothing may be loaded")

	tree = buildTree(t, []mod{{path: "extra/big.ko"}}, nil)
	bombtest.Sparse(t, filepath.Join(tree.Root, "lib", "modules", kver, "extra", "big.ko"), 6<<30, []byte("\x7fELF"))
	_, err = newNative(t, k).Load(context.Background(), node.Request{Tree: tree, Module: "big"})
	require.ErrorAs(t, err, &limit)
	assert.Contains(t, err.Error(), "big.ko")
	assert.Empty(t, k.Events())
}

// TestLoadRollsBack: a load that fails part way unloads what it loaded,
// last first, and says so; what was loaded before the call stays.
func TestLoadRollsBack(t *testing.T) {
	tree := chainTree(t)
	ctx := context.Background()
	path := filepath.Join(tree.Root, "lib/modules", kver, "extra/nic-drv.ko")

	k := fake.NewKernel(kver)
	k.FailLoad("nic_drv", syscall.ENOKEY)
	res, err := newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.ErrorIs(t, err, syscall.ENOKEY)
	assert.Equal(t, "load nic_drv ("+path+"): required key not available: the module is unsigned or signed by a key the kernel does not trust (Secure Boot or module.sig_enforce); sign it with spec.moduleLoader.container.sign and enroll the key; rolled back: crc, helper, core", err.Error())
	var le *node.Error
	require.ErrorAs(t, err, &le)
	assert.Equal(t, []string{"crc", "helper", "core"}, le.RolledBack)
	assert.Empty(t, le.NotRolledBack)
	assert.Equal(t, []string{"load core", "load helper", "load crc", "unload crc", "unload helper", "unload core"}, k.Events())
	assert.Empty(t, res.Changed, "the node is as it was")
	loaded, _ := k.Loaded()
	assert.Empty(t, loaded)

	// core was loaded before: it is not ours to unload.
	k = fake.NewKernel(kver)
	k.Preload("core")
	k.FailLoad("nic_drv", syscall.EINVAL)
	_, err = newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.ErrorAs(t, err, &le)
	assert.Equal(t, []string{"crc", "helper"}, le.RolledBack)
	loaded, _ = k.Loaded()
	assert.Equal(t, []string{"core"}, keys(loaded))

	// A module that cannot be unloaded again is named with why.
	k = fake.NewKernel(kver)
	k.FailLoad("nic_drv", syscall.ENOENT)
	k.FailUnload("helper", syscall.EAGAIN)
	res, err = newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.ErrorAs(t, err, &le)
	assert.Equal(t, []string{"crc"}, le.RolledBack)
	assert.Equal(t, "load nic_drv ("+path+"): unknown symbol or parameter (no such file or directory): the module uses a symbol or a parameter the kernel does not know (see dmesg); it was built against another kernel, or a dependency is missing; rolled back: crc; "+
		"could not roll back, still loaded: unload helper: resource temporarily unavailable: the module is in use and cannot be removed without waiting; "+
		"unload core: resource temporarily unavailable: the module is in use and cannot be removed without waiting", err.Error())
	assert.Equal(t, []string{"helper", "core"}, res.Changed, "what is still loaded is reported as changed")

	// In-tree modules removed first stay removed; only loads roll back.
	k = fake.NewKernel(kver)
	k.Preload("intree_nic")
	k.FailLoad("helper", syscall.ENOKEY)
	res, err = newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "nic-drv", InTreeModulesToRemove: []string{"intree_nic"}})
	require.ErrorAs(t, err, &le)
	assert.Equal(t, []string{"core"}, le.RolledBack)
	assert.Equal(t, []string{"intree_nic"}, res.Changed)
	assert.Equal(t, []string{"unload intree_nic", "load core", "unload core"}, k.Events())
}

// cancelOnLoad cancels a context when a module is loaded.
type cancelOnLoad struct {
	*fake.Kernel
	name   string
	cancel context.CancelFunc
}

func (c cancelOnLoad) Load(f *os.File, params string, compressed bool) error {
	err := c.Kernel.Load(f, params, compressed)
	if loaded, _ := c.Kernel.Loaded(); err == nil {
		if _, ok := loaded[c.name]; ok {
			c.cancel()
		}
	}
	return err
}

func TestLoadCancelledRollsBack(t *testing.T) {
	tree := chainTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := fake.NewKernel(kver)
	_, err := newNative(t, cancelOnLoad{Kernel: k, name: "helper", cancel: cancel}).Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "load crc")
	assert.Contains(t, err.Error(), "stopped before loading it; rolled back: helper, core")
	loaded, _ := k.Loaded()
	assert.Empty(t, loaded)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestLoadFirstTimeAndAll(t *testing.T) {
	tree := chainTree(t)
	ctx := context.Background()

	k := fake.NewKernel(kver)
	k.Preload("core")
	n := newNative(t, k)
	res, err := n.Load(ctx, node.Request{Tree: tree, Module: "helper", FirstTime: true})
	require.NoError(t, err, "a dependency already loaded is fine")
	assert.Equal(t, []string{"helper"}, res.Changed)
	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "helper", FirstTime: true})
	require.ErrorIs(t, err, node.ErrFirstTime)
	assert.Contains(t, err.Error(), "load helper ("+filepath.Join(tree.Root, "lib/modules", kver, "kernel/helper.ko")+"): already in the kernel (modprobe --first-time)")
	k.SetBuiltin("crc")
	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "crc-alias", FirstTime: true})
	require.ErrorIs(t, err, node.ErrFirstTime, "a built-in module is in the kernel too")
	assert.Equal(t, []string{"load helper"}, k.Events(), "nothing else happened")

	_, err = n.Unload(ctx, node.Request{Tree: tree, Module: "other", FirstTime: true})
	require.ErrorIs(t, err, node.ErrFirstTime)
	assert.EqualError(t, err, "unload other: not in the kernel (modprobe --first-time)")
	_, err = n.Unload(ctx, node.Request{Tree: tree, Module: "helper", FirstTime: true})
	require.NoError(t, err)

	// modprobe -a: several modules in one call; a failure rolls all back.
	k = fake.NewKernel(kver)
	n = newNative(t, k)
	res, err = n.Load(ctx, node.Request{Tree: tree, Module: "post_mod", Modules: []string{"other", "core"}, Parameters: []string{"who=big world"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"post_mod", "core", "other"}, res.Changed)
	assert.Equal(t, []string{"load post_mod who=\"big world\"", "load core", "load other"}, k.Events(), "parameters go to the first module, quoted as modprobe quotes them")
	k = fake.NewKernel(kver)
	k.FailLoad("other", syscall.ENOKEY)
	_, err = newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "post_mod", Modules: []string{"other"}})
	assert.ErrorContains(t, err, "rolled back: core, post_mod")
}

// TestLoadVermagicFlags: a module whose vermagic differs from the running
// kernel's only in its flags is refused before anything is loaded, naming
// both strings; when the kernel's vermagic cannot be learned the loader
// says so and checks the release only, and the kernel refuses it.
func TestLoadVermagicFlags(t *testing.T) {
	tree := buildTree(t, []mod{
		{path: "kernel/base.ko", exports: []string{"base_fn"}},
		{path: "extra/nopreempt.ko", needs: []string{"base_fn"}},
	}, nil)
	// buildTree writes Debian's flags; rewrite nopreempt's.
	p := filepath.Join(tree.Root, "lib/modules", kver, "extra/nopreempt.ko")
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	old := "vermagic=" + kver + " SMP preempt mod_unload modversions "
	require.True(t, bytes.Contains(data, []byte(old)))
	data = bytes.Replace(data, []byte(old), []byte("vermagic="+kver+" SMP mod_unload modversions \x00\x00\x00\x00\x00\x00\x00\x00"), 1)
	require.NoError(t, os.WriteFile(p, data, 0o644))
	ctx := context.Background()

	k := fake.NewKernel(kver)
	_, err = newNative(t, k).Load(ctx, node.Request{Tree: tree, Module: "nopreempt"})
	require.ErrorIs(t, err, node.ErrVermagic)
	assert.Equal(t, "load nopreempt ("+p+`): vermagic mismatch: module vermagic "6.1.0-56-amd64 SMP mod_unload modversions ", kernel vermagic "6.1.0-56-amd64 SMP preempt mod_unload modversions ": same release, other flags (the module lacks preempt): the module was built with another kernel configuration: build it against the headers of 6.1.0-56-amd64`, err.Error())
	assert.Empty(t, k.Events(), "base was not loaded either")

	k = fake.NewKernel(kver)
	k.HideVermagic()
	var logs strings.Builder
	n, err := node.NewNative(k, node.WithLogger(funcr.New(func(prefix, args string) { logs.WriteString(args + "\n") }, funcr.Options{})))
	require.NoError(t, err)
	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "nopreempt"})
	require.ErrorIs(t, err, syscall.ENOEXEC, "the kernel refuses it itself")
	assert.Contains(t, err.Error(), "invalid module format")
	assert.Contains(t, err.Error(), "rolled back: base")
	assert.Contains(t, logs.String(), `"msg"="cannot learn the running kernel's vermagic; checking only that modules are built for its release" "release"="6.1.0-56-amd64" "reason"="fake kernel: vermagic hidden"`)

	_, err = newNative(t, fake.NewKernel(kver)).Load(ctx, node.Request{Tree: tree, Module: "nopreempt", SkipVermagicCheck: true})
	require.ErrorIs(t, err, syscall.ENOEXEC, "skipping our check leaves the kernel's")
}

// TestNativeLogsToTheContextsLogger: without WithLogger, Load logs to the
// logger of its context; with it, to WithLogger's.
func TestNativeLogsToTheContextsLogger(t *testing.T) {
	tree := chainTree(t)
	var fromCtx, given strings.Builder
	ctx := logr.NewContext(context.Background(), funcr.New(func(_, args string) { fromCtx.WriteString(args + "\n") }, funcr.Options{Verbosity: 1}))
	n, err := node.NewNative(fake.NewKernel(kver))
	require.NoError(t, err)
	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	assert.Contains(t, fromCtx.String(), `"msg"="insmod" "module"="nic_drv"`)

	fromCtx.Reset()
	n, err = node.NewNative(fake.NewKernel(kver), node.WithLogger(funcr.New(func(_, args string) { given.WriteString(args + "\n") }, funcr.Options{Verbosity: 1})))
	require.NoError(t, err)
	_, err = n.Load(ctx, node.Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	assert.Contains(t, given.String(), `"msg"="insmod" "module"="nic_drv"`)
	assert.Empty(t, fromCtx.String(), "WithLogger wins over the context")
}

// TestNewNativeAndNewWorkerRefuse: a missing kernel and a Worker's option
// given to NewNative are refused, naming them.
func TestNewNativeAndNewWorkerRefuse(t *testing.T) {
	_, err := node.NewNative(nil)
	assert.EqualError(t, err, "node: no Kernel (LinuxKernel{} is the running one)")
	_, err = node.NewWorker(nil)
	assert.EqualError(t, err, "node: no Kernel (LinuxKernel{} is the running one)")
	_, err = node.NewNative(fake.NewKernel(kver), node.WithLogger(logr.Discard()), node.WithSysRoot("/sys"), node.WithHostRoot("/"))
	assert.EqualError(t, err, "node: NewNative: WithSysRoot configures a Worker (NewWorker)")
}
