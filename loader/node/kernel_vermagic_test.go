package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

func TestCheckVermagic(t *testing.T) {
	const (
		rel    = "6.1.0-57-amd64"
		kernel = rel + " SMP preempt mod_unload modversions "
	)
	for _, c := range []struct {
		name, module, kernel string
		want                 string // "" means accepted
	}{
		{name: "same, with modversions", module: kernel, kernel: kernel},
		{name: "same, a kernel without modversions", module: rel + " SMP preempt mod_unload ", kernel: rel + " SMP preempt mod_unload "},
		{name: "kernel vermagic unknown: release only", module: rel + " SMP mod_unload ", kernel: ""},
		{name: "flags differ: no preempt", module: rel + " SMP mod_unload modversions ", kernel: kernel,
			want: `vermagic mismatch: module vermagic "6.1.0-57-amd64 SMP mod_unload modversions ", kernel vermagic "6.1.0-57-amd64 SMP preempt mod_unload modversions ": same release, other flags (the module lacks preempt)`},
		{name: "module built without modversions", module: rel + " SMP preempt mod_unload ", kernel: kernel,
			want: `vermagic mismatch: module vermagic "6.1.0-57-amd64 SMP preempt mod_unload ", kernel vermagic "6.1.0-57-amd64 SMP preempt mod_unload modversions ": same release, other flags (the module lacks modversions)`},
		{name: "module with modversions, kernel without", module: rel + " SMP preempt mod_unload modversions ", kernel: rel + " SMP preempt mod_unload ",
			want: `vermagic mismatch: module vermagic "6.1.0-57-amd64 SMP preempt mod_unload modversions ", kernel vermagic "6.1.0-57-amd64 SMP preempt mod_unload ": same release, other flags (the module has modversions, the kernel does not)`},
		{name: "flags differ only in the trailing space, as strcmp sees it", module: rel + " SMP preempt mod_unload modversions", kernel: kernel,
			want: `same release, other flags (the same flags, spaced or ordered otherwise)`},
		{name: "release differs, flags the same", module: "6.1.0-56-amd64 SMP preempt mod_unload modversions ", kernel: kernel,
			want: `vermagic mismatch: built for "6.1.0-56-amd64", running "6.1.0-57-amd64" (module vermagic "6.1.0-56-amd64 SMP preempt mod_unload modversions ", kernel vermagic "6.1.0-57-amd64 SMP preempt mod_unload modversions ")`},
		{name: "release differs, kernel vermagic unknown", module: "5.14.0-284.el9.x86_64 SMP mod_unload ", kernel: "",
			want: `vermagic mismatch: built for "5.14.0-284.el9.x86_64", running "6.1.0-57-amd64" (module vermagic "5.14.0-284.el9.x86_64 SMP mod_unload ")`},
		{name: "no vermagic", module: "", kernel: kernel, want: "vermagic mismatch: the module has no vermagic; the kernel refuses it unless forced"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkVermagic(c.module, rel, c.kernel)
			if c.want == "" {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrVermagic)
			assert.Contains(t, err.Error(), c.want)
			var ve *vermagicError
			require.True(t, errors.As(err, &ve))
			assert.NotEmpty(t, ve.hint)
		})
	}
}

// TestInTreeVermagicDebian reads the vermagic of Debian's own kernel from
// its modules, uncompressed and xz-compressed as other distributions ship
// them.
func TestInTreeVermagicDebian(t *testing.T) {
	root, kver := testenv.KernelTree(t)
	want := kver + " SMP preempt mod_unload modversions "
	got, err := inTreeVermagic(filepath.Join(root, "lib", "modules", kver), kver)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, "kernel", "lib", "crc7.ko"))
	require.NoError(t, err)
	compressed, err := elftest.XZ(data)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "kernel", "lib"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kernel", "lib", "crc7.ko.xz"), compressed, 0o644))
	got, err = inTreeVermagic(dir, kver)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	_, err = inTreeVermagic(dir, "6.1.0-1-amd64")
	assert.ErrorIs(t, err, errNoInTreeModule)
	assert.ErrorContains(t, err, `is not of release 6.1.0-1-amd64`)
}

func TestInTreeVermagicErrors(t *testing.T) {
	const rel = "6.1.0-57-amd64"
	dir := t.TempDir()
	_, err := inTreeVermagic(dir, rel)
	assert.ErrorIs(t, err, errNoInTreeModule, "no kernel directory")
	assert.ErrorContains(t, err, dir)

	kdir := filepath.Join(dir, "kernel", "drivers")
	require.NoError(t, os.MkdirAll(kdir, 0o755))
	_, err = inTreeVermagic(dir, rel)
	assert.ErrorIs(t, err, errNoInTreeModule, "no module at all")

	// An out-of-tree module (DKMS puts them under kernel/ too on some
	// systems) and a broken file are passed over for an in-tree one.
	require.NoError(t, os.WriteFile(filepath.Join(kdir, "a_dkms.ko"), elftest.Module{Modinfo: []string{"vermagic=" + rel + " SMP mod_unload "}}.Bytes(), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(kdir, "b_broken.ko"), []byte("not a module"), 0o644))
	_, err = inTreeVermagic(dir, rel)
	assert.ErrorIs(t, err, errNoInTreeModule)
	require.NoError(t, os.WriteFile(filepath.Join(kdir, "c_intree.ko"), elftest.Module{Modinfo: []string{"intree=Y", "vermagic=" + rel + " SMP preempt mod_unload "}}.Bytes(), 0o644))
	got, err := inTreeVermagic(dir, rel)
	require.NoError(t, err)
	assert.Equal(t, rel+" SMP preempt mod_unload ", got)
}

func TestVermagicExports(t *testing.T) {
	const kernel = "6.1.0-57-amd64 SMP preempt mod_unload modversions "
	rel, flags := SplitVermagic(kernel)
	assert.Equal(t, "6.1.0-57-amd64", rel)
	assert.Equal(t, " SMP preempt mod_unload modversions ", flags)
	assert.Empty(t, VermagicFlagDiff("6.1.0-99-amd64 SMP preempt mod_unload modversions ", kernel), "releases are not compared")
	assert.Equal(t, "the module lacks preempt", VermagicFlagDiff("6.1.0-57-amd64 SMP mod_unload modversions ", kernel))
	assert.Equal(t, "the same flags, spaced or ordered otherwise", VermagicFlagDiff("6.1.0-57-amd64 SMP preempt mod_unload modversions", kernel))
}
