package nodecmd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDepmodArgs(t *testing.T) {
	opts, operands, err := parseDepmodArgs([]string{"-aeb", "/opt", "6.1.0-1", "-C/etc/x", "--symvers=/s", "--basedir", "/b2", "-vv", "f.ko", "--", "-notopt"})
	require.NoError(t, err)
	assert.Equal(t, []parsedOption{{short: 'a'}, {short: 'e'}, {short: 'b', value: "/opt"}, {short: 'C', value: "/etc/x"},
		{short: 'E', value: "/s"}, {short: 'b', value: "/b2"}, {short: 'v'}, {short: 'v'}}, opts)
	assert.Equal(t, []string{"6.1.0-1", "f.ko", "-notopt"}, operands)

	for args, want := range map[string][]string{
		"invalid option -- 'z'":              {"-z"},
		"unrecognized option '--nope'":       {"--nope"},
		"option requires an argument -- 'b'": {"-b"},
		"option '--basedir' requires":        {"--basedir"},
		"option '--all' doesn't allow":       {"--all=1"},
	} {
		_, _, err := parseDepmodArgs(want)
		assert.ErrorContains(t, err, args)
	}
}

func TestDepmodCommand(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "lib", "modules", "6.1.0-1-test")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "kernel"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kernel", "broken.ko"), []byte("not an ELF file"), 0o644))
	conf := t.TempDir()

	code, _, stderr := runDepmod(t, "-C", conf, "-b", base, "6.1.0-1-test")
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "depmod: ERROR: failed to load symbols from "+dir+"/kernel/broken.ko: not an ELF file")
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	require.NoError(t, err)
	assert.Equal(t, "kernel/broken.ko:\n", string(dep), "a broken module keeps its line, as in kmod")

	code, stdout, _ := runDepmod(t, "-n", "-C", conf, "-b", base, "6.1.0-1-test")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "kernel/broken.ko:\n# Aliases extracted from modules themselves.\n")

	code, _, stderr = runDepmod(t, "-b", base, "nonsense")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "depmod: ERROR: Bad version passed nonsense")

	code, _, stderr = runDepmod(t, "-b", filepath.Join(base, "missing"), "6.1.0-1-test")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "depmod: FATAL: could not open directory")

	code, _, stderr = runDepmod(t, "-P", "ab", "6.1.0-1")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "-P only takes a single char")

	code, stdout, _ = runDepmod(t, "-V")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "kmod version 30")

	code, _, stderr = runDepmod(t, "-q", "-C", conf, "-b", base, "6.1.0-1-test")
	assert.Equal(t, 0, code)
	assert.Contains(t, stderr, "WARNING: Ignored deprecated option -q")
}
