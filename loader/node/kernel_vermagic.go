package node

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kmmkit/kmmkit/depmod/modfile"
)

// checkVermagic compares a module's vermagic with the running kernel's
// release and, when known (kernel != ""), the kernel's whole vermagic.
//
// Linux (check_modinfo and same_magic in kernel/module/) refuses a module
// whose vermagic is not the kernel's own string; with CONFIG_MODVERSIONS
// and a module that carries symbol versions it skips the first word, the
// release, and compares the rest: the flags (SMP, preempt, mod_unload,
// modversions, ...). The loader asks more: the release must be the running
// one too, since a module tree is built for one kernel. So a module passes
// when its first word is the release and, when the kernel's vermagic is
// known, the rest equals the rest of the kernel's, byte for byte.
func checkVermagic(module, release, kernel string) error {
	const hintRelease = "use the image built for this kernel: check the Module's kernelMappings"
	if module == "" {
		return &vermagicError{detail: "the module has no vermagic; the kernel refuses it unless forced", hint: hintRelease}
	}
	modRelease, modFlags := splitVermagic(module)
	if modRelease != release {
		detail := fmt.Sprintf("built for %q, running %q (module vermagic %q, kernel vermagic %q)", modRelease, release, module, kernel)
		if kernel == "" {
			detail = fmt.Sprintf("built for %q, running %q (module vermagic %q)", modRelease, release, module)
		}
		return &vermagicError{detail: detail, hint: hintRelease}
	}
	if kernel == "" {
		return nil
	}
	if _, kernFlags := splitVermagic(kernel); modFlags != kernFlags {
		return &vermagicError{
			detail: fmt.Sprintf("module vermagic %q, kernel vermagic %q: same release, other flags (%s)", module, kernel, flagDiff(modFlags, kernFlags)),
			hint:   "the module was built with another kernel configuration: build it against the headers of " + release,
		}
	}
	return nil
}

// vermagicError is a module's vermagic the running kernel refuses. It
// wraps ErrVermagic.
type vermagicError struct {
	detail, hint string
}

func (e *vermagicError) Error() string { return ErrVermagic.Error() + ": " + e.detail }
func (e *vermagicError) Unwrap() error { return ErrVermagic }

// splitVermagic cuts a vermagic at its first space, as same_magic does:
// the release, and the flags with their leading space.
func splitVermagic(v string) (release, flags string) {
	if i := strings.IndexByte(v, ' '); i >= 0 {
		return v[:i], v[i:]
	}
	return v, ""
}

// flagDiff says how the module's flags differ from the kernel's.
func flagDiff(module, kernel string) string {
	mod, kern := strings.Fields(module), strings.Fields(kernel)
	var parts []string
	for _, f := range kern {
		if !slices.Contains(mod, f) {
			parts = append(parts, "the module lacks "+f)
		}
	}
	for _, f := range mod {
		if !slices.Contains(kern, f) {
			parts = append(parts, "the module has "+f+", the kernel does not")
		}
	}
	if len(parts) == 0 {
		return "the same flags, spaced or ordered otherwise"
	}
	return strings.Join(parts, "; ")
}

// maxVermagicCandidates bounds how many module files inTreeVermagic reads.
const maxVermagicCandidates = 16

// errNoInTreeModule says no in-tree module gave the kernel's vermagic.
var errNoInTreeModule = errors.New("no in-tree module of the running kernel found")

// inTreeVermagic returns the vermagic of an in-tree module ("intree=Y")
// of release under dir (/lib/modules/<release>): the kernel's build
// stamps its own modules with its own vermagic.
func inTreeVermagic(dir, release string) (string, error) {
	var files *moduleReader
	var found string
	var lastErr error
	tried := 0
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() || !strings.Contains(d.Name(), ".ko") {
			return nil
		}
		tried++
		if files == nil {
			if files, err = newModuleReader(); err != nil {
				return err
			}
		}
		vm, err := files.inTreeVermagic(p)
		switch {
		case err != nil:
			lastErr = fmt.Errorf("%s: %w", p, err)
		case !strings.HasPrefix(vm, release+" "):
			lastErr = fmt.Errorf("%s: vermagic %q is not of release %s", p, vm, release)
		default:
			found = vm
			return fs.SkipAll
		}
		if tried >= maxVermagicCandidates {
			return fs.SkipAll
		}
		return nil
	})
	switch {
	case found != "":
		return found, nil
	case err != nil:
		return "", fmt.Errorf("%w under %s: %w", errNoInTreeModule, dir, err)
	case lastErr != nil:
		return "", fmt.Errorf("%w under %s: %w", errNoInTreeModule, dir, lastErr)
	}
	return "", fmt.Errorf("%w under %s", errNoInTreeModule, dir)
}

// inTreeVermagic reads the vermagic of an in-tree module file.
func (r *moduleReader) inTreeVermagic(path string) (string, error) {
	elf, _, err := r.read(path)
	if err != nil {
		return "", err
	}
	info, err := modfile.ParseInfo(elf)
	if err != nil {
		return "", err
	}
	if infoValue(info, "intree") != "Y" {
		return "", errors.New("not an in-tree module")
	}
	vm := infoValue(info, "vermagic")
	if vm == "" {
		return "", errors.New("no vermagic")
	}
	return vm, nil
}
