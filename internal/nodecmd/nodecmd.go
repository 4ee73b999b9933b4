// Package nodecmd holds the commands that run on a node, shared by the
// kmm command line and the worker binary (cmd/kmm-worker, /kmm in the
// worker image): `worker` (kmmkit's `load|unload --config F` and KMM's
// own `kmod load|unload F [--firmware-path P]`) and `depmod`. Like
// package loader/node it links no Kubernetes client.
package nodecmd

import (
	"path/filepath"

	"github.com/kmmkit/kmmkit/loader/node"
)

// Env is the node the worker command acts on; the zero value is the real
// node, as the worker Pod sees it.
type Env struct {
	// Kernel loads and unloads; nil means node.LinuxKernel{}.
	Kernel node.Kernel
	// Root is prefixed to every absolute path the command reads or
	// writes: the config file, the image content, the pull directory, the
	// host's firmware directory and module trees, sysfs, the pull secret
	// and CA files. "" means /. Tests run the exact command lines of the
	// worker Pods under a temporary directory with it (the firmware
	// search path written to sysfs is then the rooted directory too).
	Root string
}

// path returns p beneath e.Root.
func (e Env) path(p string) string {
	if e.Root == "" || p == "" {
		return p
	}
	return filepath.Join(e.Root, p)
}

func (e Env) kernel() node.Kernel {
	if e.Kernel != nil {
		return e.Kernel
	}
	if e.Root == "" {
		return node.LinuxKernel{}
	}
	return node.LinuxKernel{ProcRoot: e.path("/proc"), SysRoot: e.path("/sys"), ModulesDir: e.path("/lib/modules")}
}
