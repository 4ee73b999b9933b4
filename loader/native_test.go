package loader

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/go-logr/logr"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/internal/elftest"
)

const kver = "6.1.0-56-amd64"

// fakeKernel is an in-memory kernel: it loads a module file by reading
// its .modinfo (name from the file, dependencies from "depends=").
type fakeKernel struct {
	mu           sync.Mutex
	release      string
	loaded       map[string]*LoadedModule
	deps         map[string][]string
	builtin      map[string]bool
	fail         map[string]error
	noDecompress bool
	log          []string
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{release: kver, loaded: map[string]*LoadedModule{}, deps: map[string][]string{}, builtin: map[string]bool{}, fail: map[string]error{}}
}

func (k *fakeKernel) Release() (string, error) { return k.release, nil }

func (k *fakeKernel) Loaded() (map[string]LoadedModule, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]LoadedModule{}
	for n, m := range k.loaded {
		out[n] = *m
	}
	return out, nil
}

func (k *fakeKernel) Builtin(name string) bool { return k.builtin[name] }

func (k *fakeKernel) Load(f *os.File, params string, compressed bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	// finit_module reads the whole file from offset 0, whatever the file
	// position is.
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<30))
	if err != nil {
		return err
	}
	if compressed {
		if k.noDecompress {
			return syscall.EINVAL
		}
		dec, _ := modfile.NewDecompressor(0)
		defer dec.Close()
		if data, _, err = dec.Decompress(data); err != nil {
			return syscall.EINVAL
		}
	} else if modfile.Detect(data) != modfile.None {
		return syscall.ENOEXEC
	}
	info, err := modfile.ParseInfo(data)
	if err != nil {
		return syscall.ENOEXEC
	}
	name := ""
	var deps []string
	for _, kv := range info {
		switch kv.Key {
		case "name":
			name = kv.Value
		case "depends":
			if kv.Value != "" {
				deps = strings.Split(kv.Value, ",")
			}
		}
	}
	if err := k.fail[name]; err != nil {
		return err
	}
	if _, ok := k.loaded[name]; ok {
		return syscall.EEXIST
	}
	for _, d := range deps {
		m, ok := k.loaded[d]
		if !ok {
			return syscall.ENOENT // unknown symbol
		}
		m.RefCount++
		m.UsedBy = append(m.UsedBy, name)
	}
	k.loaded[name] = &LoadedModule{Name: name}
	k.deps[name] = deps
	entry := "load " + name
	if params != "" {
		entry += " " + params
	}
	k.log = append(k.log, entry)
	return nil
}

func (k *fakeKernel) Unload(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	m, ok := k.loaded[name]
	if !ok {
		return syscall.ENOENT
	}
	if m.RefCount > 0 {
		return syscall.EAGAIN
	}
	for _, d := range k.deps[name] {
		dm := k.loaded[d]
		dm.RefCount--
		for i, u := range dm.UsedBy {
			if u == name {
				dm.UsedBy = append(dm.UsedBy[:i], dm.UsedBy[i+1:]...)
				break
			}
		}
	}
	delete(k.loaded, name)
	k.log = append(k.log, "unload "+name)
	return nil
}

// mod is a test module: its exports, what it needs, and more .modinfo.
type mod struct {
	path    string
	exports []string
	needs   []string
	info    []string
	vermag  string
}

// buildTree writes modules, runs our depmod on them and opens the tree.
func buildTree(t *testing.T, mods []mod, extra map[string]string) *Tree {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "lib", "modules", kver)
	exporter := map[string]string{}
	for _, m := range mods {
		for _, e := range m.exports {
			exporter[e] = moduleNameOf(m.path)
		}
	}
	for _, m := range mods {
		name := moduleNameOf(m.path)
		vm := m.vermag
		if vm == "" {
			vm = kver
		}
		var deps []string
		for _, n := range m.needs {
			deps = append(deps, exporter[n])
		}
		e := elftest.Module{Modinfo: append([]string{"name=" + name, "vermagic=" + vm + " SMP preempt mod_unload modversions", "depends=" + strings.Join(deps, ",")}, m.info...)}
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
	tree, err := OpenTree(root, kver)
	require.NoError(t, err)
	return tree
}

// chainTree: nic-drv needs helper and core; helper needs core; a softdep
// brings crc in before and post-mod after.
func chainTree(t *testing.T) *Tree {
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

func names(steps []Step) []string {
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
	assert.ErrorIs(t, err, ErrModuleNotFound)
}

func newNative(t *testing.T, k Kernel) *Native {
	t.Helper()
	n, err := NewNative(k, logr.Discard())
	require.NoError(t, err)
	return n
}

func TestLoadAndUnload(t *testing.T) {
	tree := chainTree(t)
	k := newFakeKernel()
	n := newNative(t, k)
	ctx := context.Background()
	res, err := n.Load(ctx, Request{Tree: tree, Module: "nic-drv", Parameters: []string{"debug=1", "mode=fast"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"core", "helper", "crc", "nic_drv", "post_mod"}, res.Changed)
	assert.Equal(t, []string{"load core", "load helper", "load crc", "load nic_drv debug=1 mode=fast", "load post_mod"}, k.log)

	res, err = n.Load(ctx, Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	assert.Empty(t, res.Changed, "loading twice changes nothing")
	assert.Len(t, res.Skipped, 5)

	// Someone else's module uses core: unloading ours must keep it.
	_, err = n.Load(ctx, Request{Tree: tree, Module: "other"})
	require.NoError(t, err)
	k.log = nil
	res, err = n.Unload(ctx, Request{Tree: tree, Module: "nic-drv"})
	require.NoError(t, err)
	assert.Equal(t, []string{"unload post_mod", "unload nic_drv", "unload crc", "unload helper"}, k.log)
	assert.Contains(t, res.Skipped, "core")
	loaded, _ := k.Loaded()
	assert.Contains(t, loaded, "core")
	assert.Contains(t, loaded, "other")

	_, err = n.Unload(ctx, Request{Tree: tree, Module: "core"})
	var le *Error
	require.ErrorAs(t, err, &le)
	assert.Contains(t, err.Error(), "still used by other")
}

func TestLoadSkipsBuiltinAndRemovesInTree(t *testing.T) {
	tree := chainTree(t)
	k := newFakeKernel()
	k.builtin["core"] = true
	// An in-tree driver and the module only it used.
	k.loaded["intree_nic"] = &LoadedModule{Name: "intree_nic"}
	k.loaded["intree_lib"] = &LoadedModule{Name: "intree_lib", RefCount: 1, UsedBy: []string{"intree_nic"}}
	k.deps["intree_nic"] = []string{"intree_lib"}
	k.loaded["core"] = nil
	delete(k.loaded, "core")
	n := newNative(t, k)
	_, err := n.Load(context.Background(), Request{Tree: tree, Module: "helper", InTreeModulesToRemove: []string{"intree-nic"}})
	require.Error(t, err, "helper needs core, which the fake does not load because it is built in")
	assert.Equal(t, []string{"unload intree_nic", "unload intree_lib"}, k.log[:2])
}

func TestLoadErrors(t *testing.T) {
	tree := buildTree(t, []mod{
		{path: "kernel/old.ko", vermag: "5.14.0-1"},
		{path: "kernel/unsigned.ko"},
	}, nil)
	k := newFakeKernel()
	k.fail["unsigned"] = syscall.ENOKEY
	n := newNative(t, k)
	ctx := context.Background()

	_, err := n.Load(ctx, Request{Tree: tree, Module: "old"})
	require.ErrorIs(t, err, ErrVermagic)
	assert.Contains(t, err.Error(), `built for "5.14.0-1", running "6.1.0-56-amd64"`)
	assert.Contains(t, err.Error(), "kernelMappings")
	_, err = n.Load(ctx, Request{Tree: tree, Module: "old", SkipVermagicCheck: true})
	require.NoError(t, err)

	_, err = n.Load(ctx, Request{Tree: tree, Module: "unsigned"})
	require.ErrorIs(t, err, syscall.ENOKEY)
	assert.Contains(t, err.Error(), "sign it with spec.moduleLoader.container.sign")

	_, err = n.Unload(ctx, Request{Tree: tree, Module: "unsigned"})
	require.NoError(t, err, "unloading what is not loaded is a no-op")

	_, err = OpenTree(t.TempDir(), kver)
	assert.ErrorContains(t, err, "kmm depmod -b")
}

func TestLoadCompressed(t *testing.T) {
	tree := buildTree(t, []mod{{path: "extra/zmod.ko.zst"}}, nil)
	for _, noDecompress := range []bool{false, true} {
		k := newFakeKernel()
		k.noDecompress = noDecompress
		res, err := newNative(t, k).Load(context.Background(), Request{Tree: tree, Module: "zmod"})
		require.NoError(t, err, "kernel decompression %v", !noDecompress)
		assert.Equal(t, []string{"zmod"}, res.Changed)
	}
}

func TestParseProcModules(t *testing.T) {
	got, err := parseProcModules([]byte("feas_hello 16384 0 - Live 0xffffffffc02ac000 (OE)\ncrc7 16384 2 a,b, Live 0x0\nbad\n"))
	require.NoError(t, err)
	assert.Equal(t, LoadedModule{Name: "feas_hello"}, got["feas_hello"])
	assert.Equal(t, LoadedModule{Name: "crc7", RefCount: 2, UsedBy: []string{"a", "b"}}, got["crc7"])
	assert.Len(t, got, 2)
	_, err = readProcModules(t.TempDir())
	assert.True(t, errors.Is(err, errNoModuleSupport))
}
