package lint

import (
	"fmt"
	"path"
	"strings"

	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/loader/node"
)

// Option configures a lint.
type Option func(*config)

type config struct {
	dirName      string
	vermagic     string
	kernelTree   string
	modules      []string
	firmwarePath string
	hostModules  []string
	signed       bool
	keyIDs       []string
}

// WithDirName sets modprobe.dirName, the image directory that holds
// lib/modules; "" means /opt.
func WithDirName(dir string) Option { return func(c *config) { c.dirName = dir } }

// WithVermagic gives the kernel's whole vermagic ("6.1.0-57-amd64 SMP
// preempt mod_unload modversions "): every module's flags must equal its
// flags. Its release must be the kernel linted for.
func WithVermagic(v string) Option { return func(c *config) { c.vermagic = v } }

// WithKernelTree gives the kernel's own module tree: its module directory
// (/lib/modules/<kernel>) or a root holding lib/modules/<kernel>, such as
// an unpacked kernel package. The vermagic of its in-tree modules is the
// reference for every module's flags (unless WithVermagic gives one), and
// dependencies the image takes from the host are looked for in it.
func WithKernelTree(dir string) Option { return func(c *config) { c.kernelTree = dir } }

// WithModules names the modules the image must hold (a Module's
// moduleName and modulesLoadingOrder), each as a module name or an alias.
func WithModules(names ...string) Option {
	return func(c *config) { c.modules = append(c.modules, names...) }
}

// WithFirmwarePath sets modprobe.firmwarePath, the image directory of the
// firmware: every firmware file a module declares must be there. Without
// it, firmware is not checked (the node's own firmware directory may
// hold it).
func WithFirmwarePath(dir string) Option { return func(c *config) { c.firmwarePath = dir } }

// WithHostModules declares modules that the image's modules may need and
// the node provides itself (loaded before the Module's, or in-tree
// modules reached through a link into the node's module tree).
func WithHostModules(names ...string) Option {
	return func(c *config) {
		for _, n := range names {
			c.hostModules = append(c.hostModules, node.NormalizeName(n))
		}
	}
}

// WithSigned asks for every module to be signed and, when keyIDs are
// given, by one of those keys (a certificate's serial number or subject
// key identifier, as modinfo's sig_key prints it; colons and case do not
// matter).
func WithSigned(keyIDs ...string) Option {
	return func(c *config) {
		c.signed = true
		for _, k := range keyIDs {
			c.keyIDs = append(c.keyIDs, normalizeKeyID(k))
		}
	}
}

// FromRecord takes the settings of a resolved kernel mapping: the
// Module's dirName, firmwarePath, moduleName and modulesLoadingOrder, and
// signed modules when the mapping signs them.
func FromRecord(rec *kernelmap.Record) Option {
	return func(c *config) {
		mp := rec.Modprobe()
		c.dirName, c.firmwarePath = mp.DirName, mp.FirmwarePath
		if mp.RawArgs == nil && mp.ModuleName != "" {
			c.modules = append(c.modules, mp.ModuleName)
		}
		c.modules = append(c.modules, mp.ModulesLoadingOrder...)
		if rec.Sign() != nil {
			c.signed = true
		}
	}
}

// newConfig applies opts and checks the kernel.
func newConfig(kernel string, opts []Option) (*config, error) {
	if kernel == "" || strings.ContainsAny(kernel, "/ \t\n") || kernel == "." || kernel == ".." {
		return nil, fmt.Errorf("invalid kernel version %q", kernel)
	}
	c := &config{}
	for _, o := range opts {
		o(c)
	}
	if c.dirName == "" {
		c.dirName = "/opt"
	}
	c.dirName = path.Clean("/" + c.dirName)
	if c.firmwarePath != "" {
		c.firmwarePath = path.Clean("/" + c.firmwarePath)
		if c.firmwarePath == "/" {
			return nil, fmt.Errorf("firmware path %q is the whole image", c.firmwarePath)
		}
	}
	if c.vermagic != "" {
		if rel, _ := node.SplitVermagic(c.vermagic); rel != kernel {
			return nil, fmt.Errorf("reference vermagic %q is of kernel %q, not %q", c.vermagic, rel, kernel)
		}
	}
	return c, nil
}

// moduleDir is the image path the worker loads from.
func (c *config) moduleDir(kernel string) string {
	return path.Join(c.dirName, "lib", "modules", kernel)
}

// searchDirs are the image directories where misplaced modules are
// looked for: the whole dirName, and the usual module trees.
func (c *config) searchDirs() []string {
	var out []string
	for _, d := range []string{c.dirName, "/opt", "/lib/modules", "/usr/lib/modules"} {
		if d == "/" {
			d = "/lib/modules"
		}
		dup := false
		for _, o := range out {
			if o == d || strings.HasPrefix(d, o+"/") {
				dup = true
			}
		}
		if !dup {
			out = append(out, d)
		}
	}
	return out
}

// normalizeKeyID drops colons and spaces and upper-cases a key id.
func normalizeKeyID(k string) string {
	return strings.ToUpper(strings.NewReplacer(":", "", " ", "").Replace(k))
}
