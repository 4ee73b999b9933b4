// Package fake holds test doubles for the loader, for users' unit tests:
// Kernel, an in-memory kernel that the native loader (node.Native,
// node.Worker) loads modules into, and NodeLoader, an in-memory
// node.NodeLoader that records which module is loaded on which node.
package fake

import (
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/loader/node"
)

// Kernel is an in-memory node.Kernel. It loads a module file by reading
// its .modinfo: the name from "name=", its dependencies from "depends=",
// as the kernel does from the module's symbols. As in Linux, loading a
// module whose dependencies are not loaded fails with ENOENT (unknown
// symbol), one whose vermagic flags (everything after the release) differ
// from the kernel's fails with ENOEXEC, and unloading a module in use
// fails with EAGAIN. It is safe for concurrent use.
type Kernel struct {
	mu           sync.Mutex
	release      string
	vermagic     string
	loaded       map[string]*node.LoadedModule
	deps         map[string][]string
	builtin      map[string]bool
	fail         map[string]error
	failUnload   map[string]error
	noDecompress bool
	hideVermagic bool
	events       []string
	builds       map[string]node.Build // of the loaded modules
	setBuilds    map[string]node.Build // SetBuild's
}

var (
	_ node.Kernel      = (*Kernel)(nil)
	_ node.UsageReader = (*Kernel)(nil)
	_ node.BuildReader = (*Kernel)(nil)
)

// DefaultFlags are the vermagic flags of a NewKernel, Debian's amd64
// kernels' (with the trailing space the kernel's own string has).
const DefaultFlags = "SMP preempt mod_unload modversions "

// NewKernel returns a Kernel running release, with vermagic
// release+" "+DefaultFlags, and nothing loaded.
func NewKernel(release string) *Kernel {
	return &Kernel{release: release, vermagic: release + " " + DefaultFlags,
		loaded: map[string]*node.LoadedModule{}, deps: map[string][]string{},
		builtin: map[string]bool{}, fail: map[string]error{}, failUnload: map[string]error{},
		builds: map[string]node.Build{}, setBuilds: map[string]node.Build{}}
}

// SetVermagic sets the kernel's whole vermagic.
func (k *Kernel) SetVermagic(v string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.vermagic = v
}

// HideVermagic makes Vermagic fail, as on a node whose in-tree modules
// cannot be read; Load still compares vermagics, as Linux does.
func (k *Kernel) HideVermagic() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hideVermagic = true
}

// FailUnload makes unloading the module fail with err (a syscall.Errno
// such as syscall.EAGAIN).
func (k *Kernel) FailUnload(name string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failUnload[name] = err
}

// SetBuiltin marks a module as built into the kernel.
func (k *Kernel) SetBuiltin(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.builtin[name] = true
}

// FailLoad makes loading the module fail with err (a syscall.Errno such
// as syscall.ENOKEY).
func (k *Kernel) FailLoad(name string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fail[name] = err
}

// RefuseCompressed makes the kernel refuse compressed files, as kernels
// before 6.4 do, so the loader decompresses them itself.
func (k *Kernel) RefuseCompressed() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.noDecompress = true
}

// Preload marks a module as loaded, used by the given modules.
func (k *Kernel) Preload(name string, usedBy ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.loaded[name] = &node.LoadedModule{Name: name, RefCount: len(usedBy), UsedBy: usedBy}
	for _, u := range usedBy {
		k.deps[u] = append(k.deps[u], name)
	}
}

// SetBuild makes Build report b for the module, loaded now or later,
// whatever its file's .modinfo says: another build of it loaded by hand,
// say, when used with Preload.
func (k *Kernel) SetBuild(name string, b node.Build) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.setBuilds[name] = b
}

// Build implements node.BuildReader, as sysfs tells it: the srcversion
// and version of the file the module was loaded from (a Preload'ed
// module has neither), unless SetBuild said otherwise. It fails with
// ENOENT for a module that is not loaded.
func (k *Kernel) Build(name string) (node.Build, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.loaded[name]; !ok {
		return node.Build{}, syscall.ENOENT
	}
	if b, ok := k.setBuilds[name]; ok {
		return b, nil
	}
	return k.builds[name], nil
}

// Hold takes a reference on a loaded module that is not another module's
// (a process holding its device open, say): its reference count goes up
// with no holder, and unloading it fails with EAGAIN until Drop. It
// reports whether the module is loaded.
func (k *Kernel) Hold(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	m, ok := k.loaded[name]
	if ok {
		m.RefCount++
	}
	return ok
}

// Drop gives back a reference taken with Hold.
func (k *Kernel) Drop(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if m, ok := k.loaded[name]; ok && m.RefCount > len(m.UsedBy) {
		m.RefCount--
	}
}

// Usage implements node.UsageReader, as sysfs tells it: the reference
// count, and the modules using it as holders. It fails with ENOENT for a
// module that is not loaded.
func (k *Kernel) Usage(name string) (node.Usage, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	m, ok := k.loaded[name]
	if !ok {
		return node.Usage{}, syscall.ENOENT
	}
	holders := slices.Clone(m.UsedBy)
	slices.Sort(holders)
	return node.Usage{RefCount: m.RefCount, Holders: holders}, nil
}

// Events returns what happened, in order: "load <name> [params]" and
// "unload <name>".
func (k *Kernel) Events() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.events...)
}

// Release implements node.Kernel.
func (k *Kernel) Release() (string, error) { return k.release, nil }

// Vermagic implements node.Kernel.
func (k *Kernel) Vermagic() (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.hideVermagic {
		return "", errors.New("fake kernel: vermagic hidden")
	}
	return k.vermagic, nil
}

// Loaded implements node.Kernel.
func (k *Kernel) Loaded() (map[string]node.LoadedModule, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]node.LoadedModule, len(k.loaded))
	for n, m := range k.loaded {
		c := *m
		c.UsedBy = append([]string(nil), m.UsedBy...)
		out[n] = c
	}
	return out, nil
}

// Builtin implements node.Kernel.
func (k *Kernel) Builtin(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.builtin[name]
}

// Load implements node.Kernel. Like finit_module, it reads the whole
// file from offset 0.
func (k *Kernel) Load(f *os.File, params string, compressed bool) error {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<31))
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if compressed {
		if k.noDecompress {
			return syscall.EINVAL
		}
		dec, err := modfile.NewDecompressor()
		if err != nil {
			return err
		}
		data, _, err = dec.Decompress(data)
		dec.Close()
		if err != nil {
			return syscall.EINVAL
		}
	} else if modfile.Detect(data) != modfile.None {
		return syscall.ENOEXEC
	}
	info, err := modfile.ParseInfo(data)
	if err != nil {
		return syscall.ENOEXEC
	}
	name, vermagic := "", ""
	var deps []string
	var build node.Build
	for _, kv := range info {
		switch kv.Key {
		case "name":
			name = kv.Value
		case "vermagic":
			vermagic = kv.Value
		case "srcversion":
			build.SrcVersion = kv.Value
		case "version":
			build.Version = kv.Value
		case "depends":
			if kv.Value != "" {
				deps = strings.Split(kv.Value, ",")
			}
		}
	}
	if name == "" || !sameFlags(vermagic, k.vermagic) {
		return syscall.ENOEXEC
	}
	if err := k.fail[name]; err != nil {
		return err
	}
	if _, ok := k.loaded[name]; ok {
		return syscall.EEXIST
	}
	for _, d := range deps {
		if _, ok := k.loaded[d]; !ok {
			return syscall.ENOENT
		}
	}
	for _, d := range deps {
		m := k.loaded[d]
		m.RefCount++
		m.UsedBy = append(m.UsedBy, name)
	}
	k.loaded[name] = &node.LoadedModule{Name: name}
	k.deps[name] = deps
	k.builds[name] = build
	ev := "load " + name
	if params != "" {
		ev += " " + params
	}
	k.events = append(k.events, ev)
	return nil
}

// Unload implements node.Kernel.
func (k *Kernel) Unload(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	m, ok := k.loaded[name]
	if !ok {
		return syscall.ENOENT
	}
	if err := k.failUnload[name]; err != nil {
		return err
	}
	if m.RefCount > 0 {
		return syscall.EAGAIN
	}
	for _, d := range k.deps[name] {
		if dm, ok := k.loaded[d]; ok {
			dm.RefCount--
			for i, u := range dm.UsedBy {
				if u == name {
					dm.UsedBy = append(dm.UsedBy[:i], dm.UsedBy[i+1:]...)
					break
				}
			}
		}
	}
	delete(k.loaded, name)
	delete(k.deps, name)
	delete(k.builds, name)
	k.events = append(k.events, "unload "+name)
	return nil
}

// sameFlags compares two vermagics as Linux does for a module with symbol
// versions on a kernel with CONFIG_MODVERSIONS: everything after the
// release.
func sameFlags(module, kernel string) bool {
	_, m, _ := strings.Cut(module, " ")
	_, k, _ := strings.Cut(kernel, " ")
	return m == k
}
