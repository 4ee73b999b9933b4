package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

// helpCases are every command and subcommand, with text their help must
// hold: the synopsis, flags and the exit status.
var helpCases = []struct {
	args []string
	want []string
}{
	{[]string{"map"}, []string{"usage: kmm map -f MODULE.yaml", "-kernel value", "-skip-validation", "exit status: 0 when every kernel has a mapping, 1 when"}},
	{[]string{"validate"}, []string{"usage: kmm validate -f FILE", "-path string", "-embedded", "exit status: 0 when every object checked is valid, 1 when"}},
	{[]string{"image"}, []string{"usage: kmm image check REF", "kmm image worker REF", "exit status:"}},
	{[]string{"image", "check"}, []string{"usage: kmm image check REF", "-insecure", "-platform string", "-idle-timeout duration", "exit status: 0 when the image exists", "1 when the registry said it does not", "2 with the reason"}},
	{[]string{"image", "lint"}, []string{"usage: kmm image lint REF --kernel VERSION", "kmm image lint --dir DIR", "-kernel-tree string", "-signed-by value", "exit status: 0 when nothing is found, 1 when something is", "2 when the image or the tree cannot be\nread"}},
	{[]string{"preflight"}, []string{"usage: kmm preflight -f MODULES.yaml --kernel VERSION", "-kubeconfig string", "-modules-dir string", "exit status: 0 when every Module works on every kernel, 1 when some do not", "2 on bad input"}},
	{[]string{"image", "worker"}, []string{"usage: kmm image worker REF", "-platform string", "-source string", "exit status: 0 when the index is pushed"}},
	{[]string{"worker"}, []string{"usage: kmm worker load|unload --config FILE", "exit status: 0 when the modules are loaded"}},
	{[]string{"worker", "load"}, []string{"usage: kmm worker load --config FILE", "-image-dir string", "-firmware-host-path string", "exit status: 0 when the modules are loaded"}},
	{[]string{"worker", "unload"}, []string{"usage: kmm worker unload --config FILE", "-config string", "exit status:"}},
	{[]string{"worker", "kmod"}, []string{"usage: kmm worker kmod load|unload CONFIG [--firmware-path DIR]", "KMM's operator", "exit status: 0 when the modules are loaded"}},
	{[]string{"worker", "kmod", "load"}, []string{"usage: kmm worker kmod load CONFIG", "-firmware-path string", "exit status: 0 when the modules are loaded"}},
	{[]string{"worker", "kmod", "unload"}, []string{"usage: kmm worker kmod unload CONFIG", "-firmware-path string", "exit status:"}},
	{[]string{"sign-file"}, []string{"usage: kmm sign-file HASH KEY CERT MODULE [DEST]", "exit status: 0 when the module is signed, 2 on any error"}},
	{[]string{"depmod"}, []string{"Usage: kmm depmod [options]", "-b, --basedir=DIR", "Exit status: 0 on success (and for -h and -V), 1 on any failure"}},
	{[]string{"version"}, []string{"usage: kmm version", "exit status: 0."}},
}

// TestHelpOfEveryCommand asks every command and subcommand for help in
// every way: it goes to standard output with the flags and exit status,
// and the exit status is 0.
func TestHelpOfEveryCommand(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range helpCases {
		covered[tc.args[0]] = true
		name := strings.Join(tc.args, " ")
		var first string
		for _, args := range [][]string{
			append(append([]string(nil), tc.args...), "-h"),
			append(append([]string(nil), tc.args...), "--help"),
			append([]string{"help"}, tc.args...),
		} {
			code, out, stderr := runCmd(t, "", args...)
			assert.Equal(t, exitOK, code, "kmm %s: %s", strings.Join(args, " "), stderr)
			assert.Empty(t, stderr, "kmm %s", strings.Join(args, " "))
			for _, w := range tc.want {
				assert.Contains(t, out, w, "kmm %s", strings.Join(args, " "))
			}
			if first == "" {
				first = out
			}
			assert.Equal(t, first, out, "every way of asking for help of %s prints the same", name)
		}
	}
	for _, c := range commands() {
		assert.True(t, covered[c.name], "command %s has a help case", c.name)
	}
}

func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"help", "help"}} {
		code, out, stderr := runCmd(t, "", args...)
		assert.Equal(t, exitOK, code)
		assert.Empty(t, stderr)
		assert.Contains(t, out, "usage: kmm <command> [flags]")
		for _, c := range commands() {
			assert.Contains(t, out, "  "+c.name+" ", args)
		}
		assert.Contains(t, out, "exit status: 0 on success; 1 when the answer is no")
	}
	code, out, stderr := runCmd(t, "")
	assert.Equal(t, exitError, code, "no command is a usage error")
	assert.Empty(t, out)
	assert.Contains(t, stderr, "usage: kmm <command> [flags]")
}

// TestUnknownCommandsExit2: an unknown command, subcommand or help topic
// is a usage error, reported on standard error with the usage.
func TestUnknownCommandsExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `kmm: unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, `kmm help: unknown help topic "frobnicate"`},
		{[]string{"image", "push"}, `kmm image: unknown command "push"`},
		{[]string{"help", "image", "push"}, `kmm image: unknown command "push"`},
		{[]string{"image"}, "usage: kmm image check REF"},
		{[]string{"worker", "reload"}, `kmm worker: unknown command "reload"`},
		{[]string{"help", "worker", "reload"}, `kmm worker: unknown command "reload"`},
		{[]string{"worker"}, "usage: kmm worker load|unload"},
		{[]string{"worker", "kmod"}, "usage: kmm worker kmod load|unload CONFIG"},
		{[]string{"worker", "kmod", "reload"}, `kmm worker kmod: unknown command "reload"`},
		{[]string{"worker", "kmod", "load", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"image", "check"}, "kmm image check: no image reference given"},
		{[]string{"image", "check", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"worker", "load", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"version", "x"}, `kmm version: unexpected argument "x"`},
		{[]string{"sign-file", "sha256"}, "usage: kmm sign-file"},
	} {
		code, out, stderr := runCmd(t, "", tc.args...)
		assert.Equal(t, exitError, code, tc.args)
		assert.Empty(t, out, tc.args)
		assert.Contains(t, stderr, tc.want, tc.args)
	}
	code, _, stderr := runCmd(t, "", "depmod", "--nope")
	assert.Equal(t, 1, code, "depmod keeps kmod's exit status for a bad option")
	assert.Contains(t, stderr, "unrecognized option '--nope'")
}

var versionLine = regexp.MustCompile(`^kmm \S+ \(go1\.\d+\S* ` + runtime.GOOS + `/` + runtime.GOARCH + `\)\n$`)

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		code, out, stderr := runCmd(t, "", args...)
		assert.Equal(t, exitOK, code)
		assert.Empty(t, stderr)
		assert.Regexp(t, versionLine, out)
		assert.Contains(t, out, runtime.Version())
	}
	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3"
	_, out, _ := runCmd(t, "", "--version")
	assert.Equal(t, "kmm v1.2.3 ("+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+")\n", out)
}

// TestVersionOfABuild builds kmm as a release is built, with the version
// in -ldflags, and runs it: also under the name depmod.
func TestVersionOfABuild(t *testing.T) {
	goTool := testenv.LookPath(t, "go", "install Go")
	dir := t.TempDir()
	bin := filepath.Join(dir, "kmm")
	build := exec.Command(goTool, "build", "-o", bin, "-ldflags", "-X main.version=v0.9.1-test", ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(bin, "--version").CombinedOutput()
	require.NoError(t, err)
	assert.Equal(t, "kmm v0.9.1-test ("+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+")\n", string(out))

	require.NoError(t, os.Symlink(bin, filepath.Join(dir, "depmod")))
	cmd := exec.Command(filepath.Join(dir, "depmod"), "-h")
	out, err = cmd.Output()
	require.NoError(t, err, "depmod -h exits 0, as kmod's")
	assert.Contains(t, string(out), "Usage: kmm depmod")
}
