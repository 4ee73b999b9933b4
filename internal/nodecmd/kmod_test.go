package nodecmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/loader/node/fake"
	"github.com/kmmkit/kmmkit/reason"
)

const kmmKernel = "6.1.0-57-amd64"

// kmmConfig is the worker config KMM's operator writes into the
// worker-config annotation (internal/pod/workerpodmanager_test.go's, with
// a real kernel, a loading order that starts with moduleName as KMM's
// webhook wants, and key=value parameters).
const kmmConfig = `containerImage: container-image:v1
imagePullPolicy: IfNotPresent
inTreeModulesToRemove:
- intree1
- intree2
insecurePull: true
kernelVersion: ` + kmmKernel + `
modprobe:
  dirName: /dir
  firmwarePath: /firmware-path
  moduleName: test
  modulesLoadingOrder:
  - test
  - b
  - c
  parameters:
  - a=1
  - b=2
`

// kmmPod lays out under a temporary root what KMM's worker container
// sees: the config at /etc/kmm-worker/config.yaml, the image's module
// tree and firmware where the image-extractor init container copies them
// (/tmp/dir/lib/modules/<kernel>, /tmp/firmware-path), the host's
// firmware directory and sysfs' firmware_class path.
func kmmPod(t *testing.T, config string) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, data string) {
		t.Helper()
		full := filepath.Join(root, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(data), 0o644))
	}
	write("etc/kmm-worker/config.yaml", config)
	for _, name := range []string{"test", "b", "c"} {
		mod := elftest.Module{Modinfo: []string{"name=" + name, "vermagic=" + kmmKernel + " " + fake.DefaultFlags}}.Bytes()
		write("tmp/dir/lib/modules/"+kmmKernel+"/extra/"+name+".ko", string(mod))
	}
	_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: filepath.Join(root, "tmp", "dir"), KernelVersion: kmmKernel, ConfigPaths: []string{}})
	require.NoError(t, err)
	write("tmp/firmware-path/acme/nic.bin", "FW")
	write("var/lib/firmware/other/keep.bin", "K")
	write("sys/module/firmware_class/parameters/path", "\n")
	return root
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return "<absent>"
	}
	require.NoError(t, err)
	return string(data)
}

// TestKMMWorkerCommandLine runs the worker with the argument lists KMM's
// operator gives its worker container (internal/pod/workerpodmanager.go:
// LoaderPodTemplate and UnloaderPodTemplate set only args, so the image's
// entrypoint, "/kmm worker", comes first): the worker reads what KMM's
// init container copied to /tmp, removes in-tree modules, copies the
// firmware to --firmware-path and points the kernel at it, loads in
// modulesLoadingOrder; then unloads every module of the order and removes
// the firmware it copied.
func TestKMMWorkerCommandLine(t *testing.T) {
	root := kmmPod(t, kmmConfig)
	k := fake.NewKernel(kmmKernel)
	k.Preload("intree1")
	env := Env{Kernel: k, Root: root}

	code, stdout, stderr := runWorker(t, env, "kmod", "load", "/etc/kmm-worker/config.yaml", "--firmware-path", "/var/lib/firmware")
	require.Equal(t, cli.ExitOK, code, stderr)
	assert.Equal(t, "loaded: intree1,c,b,test; unchanged: \n", stdout)
	assert.Equal(t, []string{"unload intree1", "load c", "load b", "load test a=1 b=2"}, k.Events())
	assert.Equal(t, "FW", readFile(t, filepath.Join(root, "var/lib/firmware/acme/nic.bin")))
	assert.Equal(t, "K", readFile(t, filepath.Join(root, "var/lib/firmware/other/keep.bin")))
	assert.Equal(t, filepath.Join(root, "var/lib/firmware"), readFile(t, filepath.Join(root, "sys/module/firmware_class/parameters/path")),
		"the kernel looks for firmware in --firmware-path (beneath the test's root)")

	code, stdout, stderr = runWorker(t, env, "kmod", "unload", "/etc/kmm-worker/config.yaml", "--firmware-path", "/var/lib/firmware")
	require.Equal(t, cli.ExitOK, code, stderr)
	assert.Equal(t, "unloaded: test,b,c; unchanged: \n", stdout)
	assert.Equal(t, "<absent>", readFile(t, filepath.Join(root, "var/lib/firmware/acme/nic.bin")), "the image's firmware is removed")
	assert.Equal(t, "K", readFile(t, filepath.Join(root, "var/lib/firmware/other/keep.bin")), "other firmware stays")
}

// TestKMMWorkerCommandLineWithoutFirmware: for a Module without
// firmwarePath KMM passes no --firmware-path, and the worker leaves the
// kernel's firmware search path alone.
func TestKMMWorkerCommandLineWithoutFirmware(t *testing.T) {
	root := kmmPod(t, strings.Replace(kmmConfig, "  firmwarePath: /firmware-path\n", "", 1))
	k := fake.NewKernel(kmmKernel)
	env := Env{Kernel: k, Root: root}
	code, stdout, stderr := runWorker(t, env, "kmod", "load", "/etc/kmm-worker/config.yaml")
	require.Equal(t, cli.ExitOK, code, stderr)
	assert.Equal(t, "loaded: c,b,test; unchanged: \n", stdout)
	assert.Equal(t, "\n", readFile(t, filepath.Join(root, "sys/module/firmware_class/parameters/path")))
	assert.Equal(t, "<absent>", readFile(t, filepath.Join(root, "var/lib/firmware/acme/nic.bin")))

	code, stdout, stderr = runWorker(t, env, "kmod", "unload", "/etc/kmm-worker/config.yaml")
	require.Equal(t, cli.ExitOK, code, stderr)
	assert.Equal(t, "unloaded: test,b,c; unchanged: \n", stdout)
	assert.Empty(t, loadedNames(t, k))
}

func loadedNames(t *testing.T, k *fake.Kernel) []string {
	t.Helper()
	loaded, err := k.Loaded()
	require.NoError(t, err)
	var out []string
	for name := range loaded {
		out = append(out, name)
	}
	return out
}

// TestKMMWorkerCommandLineForms: as KMM's cobra command, the flag may
// come before the config and as --flag=value, and -v sets the log level.
func TestKMMWorkerCommandLineForms(t *testing.T) {
	for name, args := range map[string][]string{
		"flag first":   {"kmod", "load", "--firmware-path", "/var/lib/firmware", "/etc/kmm-worker/config.yaml"},
		"flag=value":   {"kmod", "load", "/etc/kmm-worker/config.yaml", "--firmware-path=/var/lib/firmware"},
		"one dash, -v": {"kmod", "load", "-v", "2", "/etc/kmm-worker/config.yaml", "-firmware-path", "/var/lib/firmware"},
	} {
		t.Run(name, func(t *testing.T) {
			root := kmmPod(t, kmmConfig)
			k := fake.NewKernel(kmmKernel)
			code, stdout, stderr := runWorker(t, Env{Kernel: k, Root: root}, args...)
			require.Equal(t, cli.ExitOK, code, stderr)
			assert.Equal(t, "loaded: c,b,test; unchanged: \n", stdout)
			assert.Equal(t, "FW", readFile(t, filepath.Join(root, "var/lib/firmware/acme/nic.bin")))
		})
	}
}

// TestKMMWorkerCommandLineErrors: a wrong command line or config fails
// with a message naming what is wrong, and nothing on the node changes.
func TestKMMWorkerCommandLineErrors(t *testing.T) {
	cases := map[string]struct {
		config string
		args   []string
		want   string
	}{
		"no config":       {args: []string{"kmod", "load"}, want: "kmm worker kmod load: want exactly one argument, the config file; got 0"},
		"two configs":     {args: []string{"kmod", "unload", "/etc/kmm-worker/config.yaml", "/etc/other.yaml"}, want: "got 2"},
		"unknown action":  {args: []string{"kmod", "reload", "/etc/kmm-worker/config.yaml"}, want: `kmm worker kmod: unknown command "reload"`},
		"unknown flag":    {args: []string{"kmod", "load", "/etc/kmm-worker/config.yaml", "--firmware", "/x"}, want: "flag provided but not defined: -firmware"},
		"missing config":  {args: []string{"kmod", "load", "/etc/kmm-worker/missing.yaml"}, want: "kmm worker kmod load: open " + "ROOT/etc/kmm-worker/missing.yaml: no such file or directory"},
		"unknown field":   {config: kmmConfig + "bogus: 1\n", args: []string{"kmod", "load", "/etc/kmm-worker/config.yaml"}, want: `/etc/kmm-worker/config.yaml: `},
		"missing tree":    {config: strings.Replace(kmmConfig, "dirName: /dir", "dirName: /nowhere", 1), args: []string{"kmod", "load", "/etc/kmm-worker/config.yaml"}, want: "ROOT/tmp/nowhere/lib/modules/" + kmmKernel},
		"invalid webhook": {config: strings.Replace(kmmConfig, "  - test\n  - b\n", "  - b\n  - test\n", 1), args: []string{"kmod", "load", "/etc/kmm-worker/config.yaml"}, want: "modulesLoadingOrder"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := kmmConfig
			if tc.config != "" {
				cfg = tc.config
			}
			root := kmmPod(t, cfg)
			k := fake.NewKernel(kmmKernel)
			code, stdout, stderr := runWorker(t, Env{Kernel: k, Root: root}, tc.args...)
			assert.Equal(t, cli.ExitError, code)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, strings.ReplaceAll(tc.want, "ROOT", root))
			t.Logf("the worker said: %s", stderr)
			assert.Empty(t, k.Events(), "nothing changed on the node")
			assert.Equal(t, "\n", readFile(t, filepath.Join(root, "sys/module/firmware_class/parameters/path")))
			assert.Equal(t, "<absent>", readFile(t, filepath.Join(root, "var/lib/firmware/acme/nic.bin")))
		})
	}
}

// TestWorkerUnloadInUse: an unload the kernel refuses because the module
// is in use fails, and the worker's last line, its Pod's termination
// message, names what holds it and is tagged with reason.ModuleInUse for
// the pod loader; once the holder is gone the same command unloads.
func TestWorkerUnloadInUse(t *testing.T) {
	root := kmmPod(t, kmmConfig)
	k := fake.NewKernel(kmmKernel)
	env := Env{Kernel: k, Root: root}
	code, _, stderr := runWorker(t, env, "kmod", "load", "/etc/kmm-worker/config.yaml")
	require.Equal(t, cli.ExitOK, code, stderr)
	require.True(t, k.Hold("test"), "a process holds test's device")

	code, stdout, stderr := runWorker(t, env, "kmod", "unload", "/etc/kmm-worker/config.yaml")
	assert.Equal(t, cli.ExitError, code)
	assert.Empty(t, stdout)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	assert.Equal(t, "kmm worker kmod unload: unload test: in use (reference count 1): a process holds its device, or another kernel user [ModuleInUse]", last)
	msg, r := reason.Untagged(last)
	assert.Equal(t, reason.ModuleInUse, r)
	assert.NotContains(t, msg, "[")
	assert.Equal(t, []string{"test"}, loadedNames(t, k), "as modprobe -r, the other modules named are unloaded")

	k.Drop("test")
	code, stdout, stderr = runWorker(t, env, "kmod", "unload", "/etc/kmm-worker/config.yaml")
	require.Equal(t, cli.ExitOK, code, stderr)
	assert.Equal(t, "unloaded: test; unchanged: b,c\n", stdout)
}

// TestWorkerLoadBuildMismatch: the worker's line says which srcversion
// the kernel runs after a load; when the kernel runs another build of the
// module, the load fails and its last line names both srcversions and is
// tagged with reason.ModuleBuildMismatch for the pod loader.
func TestWorkerLoadBuildMismatch(t *testing.T) {
	root := kmmPod(t, kmmConfig)
	mod := elftest.Module{Modinfo: []string{"name=test", "vermagic=" + kmmKernel + " " + fake.DefaultFlags, "version=2.0", "srcversion=NEWBUILD"}}.Bytes()
	file := filepath.Join(root, "tmp/dir/lib/modules", kmmKernel, "extra/test.ko")
	require.NoError(t, os.WriteFile(file, mod, 0o644))
	k := fake.NewKernel(kmmKernel)
	env := Env{Kernel: k, Root: root}
	code, stdout, stderr := runWorker(t, env, "kmod", "load", "/etc/kmm-worker/config.yaml")
	require.Equal(t, cli.ExitOK, code, stderr)
	assert.Equal(t, "loaded: c,b,test; unchanged: ; srcversion: NEWBUILD\n", stdout)

	k.SetBuild("test", node.Build{SrcVersion: "OLDBUILD", Version: "1.0"})
	before := len(k.Events())
	code, stdout, stderr = runWorker(t, env, "kmod", "load", "/etc/kmm-worker/config.yaml")
	assert.Equal(t, cli.ExitError, code)
	assert.Empty(t, stdout)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	msg, r := reason.Untagged(lines[len(lines)-1])
	assert.Equal(t, reason.ModuleBuildMismatch, r)
	assert.Equal(t, "kmm worker kmod load: load test ("+file+"): the kernel runs test srcversion OLDBUILD, the image's file has srcversion NEWBUILD: "+
		"another build of the module is loaded: unload it first (or let kmmkit's upgrade do it)", msg)
	assert.Len(t, k.Events(), before, "nothing changed")
}
