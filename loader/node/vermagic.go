package node

// InTreeVermagic returns the whole vermagic of kernel release as its own
// build stamped it: that of an in-tree module ("intree=Y") under dir, the
// kernel's module directory (/lib/modules/<release>). It is the reference
// LinuxKernel.Vermagic uses, for tools that check modules against a kernel
// that is not running (a kmod image's linter, say).
func InTreeVermagic(dir, release string) (string, error) { return inTreeVermagic(dir, release) }

// SplitVermagic cuts a vermagic at its first space, as the kernel's
// same_magic does: the release, and the flags with their leading space
// ("6.1.0-57-amd64", " SMP preempt mod_unload modversions ").
func SplitVermagic(v string) (release, flags string) { return splitVermagic(v) }

// VermagicFlagDiff compares the flags of a module's vermagic with a
// kernel's, byte for byte as the kernel does once the releases match: ""
// when the kernel accepts them, else what differs ("the module lacks
// preempt").
func VermagicFlagDiff(module, kernel string) string {
	_, mod := splitVermagic(module)
	_, kern := splitVermagic(kernel)
	if mod == kern {
		return ""
	}
	return flagDiff(mod, kern)
}
