package node_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/internal/vmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

// vmImage is the content of a kmod image as the worker sees it: files by
// path under the image root. Modules go under /opt/lib/modules/<kver>.
type vmImage map[string][]byte

// vmScenario is one boot of Debian's kernel running the native worker.
type vmScenario struct {
	image    vmImage
	preload  []string // Debian modules (relative to lib/modules/<kver>) loaded first
	config   v1beta1.ModuleConfig
	configs  []v1beta1.ModuleConfig // one per action, instead of config
	actions  []string
	params   []string
	files    []string
	firmware string // host firmware path inside the VM
	// noHostModules leaves /lib/modules out of the VM. Otherwise it holds,
	// indexed, Debian's crc7.ko, as the worker Pod sees the host's
	// /lib/modules: the worker learns the kernel's vermagic there.
	noHostModules bool
	dmesg         string // kernel log lines holding it are reported
	// commands run the worker binary (cmd/kmm-worker, at /kmm) after the
	// actions, as a worker Pod's container would. configFile is where
	// config is written for them (YAML), imageRoot where the image
	// content is ("" means /image, where the actions read it).
	commands   [][]string
	configFile string
	imageRoot  string
	// holds open a device after one action until after another, as a
	// process using a module's device would.
	holds []vmHold
}

// vmHold is a device held open from after action After to after action
// Until (indexes into actions).
type vmHold struct {
	Device string `json:"device"`
	After  int    `json:"after"`
	Until  int    `json:"until"`
}

// bootWorker indexes the image's module tree with our depmod, packs it
// with vminit, boots Debian's kernel and returns the KMMKIT lines.
func bootWorker(t *testing.T, s vmScenario) map[string]string {
	t.Helper()
	qemu := testenv.LookPath(t, "qemu-system-x86_64", "apt-get install qemu-system-x86")
	root, kver := testenv.KernelTree(t)
	imageDir := t.TempDir()
	for p, data := range s.image {
		full := filepath.Join(imageDir, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, data, 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(imageDir, "opt", "lib", "modules", kver), 0o755))
	dirs := map[string]bool{"/opt": true}
	for _, c := range s.configs {
		if c.Modprobe.DirName != "" {
			dirs[c.Modprobe.DirName] = true
		}
	}
	for dir := range dirs { // each module tree the configs name
		_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: filepath.Join(imageDir, dir), KernelVersion: kver, ConfigPaths: []string{}})
		require.NoError(t, err)
	}

	files := map[string]vmtest.File{}
	var err error
	require.NoError(t, filepath.Walk(imageDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(imageDir, p)
		files[filepath.Join(cmp.Or(s.imageRoot, "/image"), rel)] = vmtest.File{Data: data}
		return nil
	}))
	if !s.noHostModules {
		host := t.TempDir()
		dst := filepath.Join(host, "lib", "modules", kver, "kernel", "lib", "crc7.ko")
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, "kernel", "lib", "crc7.ko"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(dst, data, 0o644))
		_, err = depmod.Run(context.Background(), depmod.Options{BaseDir: host, KernelVersion: kver, ConfigPaths: []string{}})
		require.NoError(t, err)
		require.NoError(t, filepath.Walk(host, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			rel, _ := filepath.Rel(host, p)
			files["/"+rel] = vmtest.File{Data: data}
			return err
		}))
	}
	var preload []string
	for _, p := range s.preload {
		data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, p))
		require.NoError(t, err)
		files["/host/"+p] = vmtest.File{Data: data}
		preload = append(preload, "/host/"+p)
	}
	files["/init"] = vmtest.File{Data: buildStatic(t, "./internal/vminit"), Mode: 0o755}
	s.config.KernelVersion = kver
	for i := range s.configs {
		s.configs[i].KernelVersion = kver
	}
	if len(s.commands) > 0 {
		files["/kmm"] = vmtest.File{Data: buildStatic(t, "../../cmd/kmm-worker"), Mode: 0o755}
		data, err := yaml.Marshal(s.config)
		require.NoError(t, err)
		files[s.configFile] = vmtest.File{Data: data}
	}
	cfg, err := json.Marshal(map[string]any{
		"preload": preload, "worker": s.config, "workers": s.configs, "imageRoot": "/image", "firmwareHostPath": s.firmware,
		"actions": s.actions, "commands": s.commands, "params": s.params, "files": s.files, "dmesg": s.dmesg, "holds": s.holds,
	})
	require.NoError(t, err)
	files["/kmmkit.json"] = vmtest.File{Data: cfg}

	console, err := vmtest.Boot(context.Background(), qemu, filepath.Join(root, "boot", "vmlinuz-"+kver), vmtest.Initramfs(files), 3*time.Minute)
	require.NoError(t, err, "console:\n%s", console)
	results := map[string]string{}
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
		if i := strings.Index(line, "KMMKIT "); i >= 0 {
			k, v, _ := strings.Cut(line[i+len("KMMKIT "):], ": ")
			if prev, ok := results[k]; ok {
				v = prev + "\n" + v
			}
			results[k] = v
		}
	}
	require.Contains(t, results, "done", "console:\n%s", console)
	t.Logf("VM said: %v", results)
	return results
}

// buildStatic builds the command pkg (a path relative to this package)
// as a static linux/amd64 binary and returns it.
func buildStatic(t *testing.T, pkg string) []byte {
	t.Helper()
	return once(t, "static "+pkg, func() []byte { return buildStaticNow(t, pkg) })
}

// built holds what the VM tests compile, once per test binary: every boot
// needs the same /init, and most the same test modules.
var built sync.Map

// once returns what build made for key the first time it was asked.
func once[T any](t *testing.T, key string, build func() T) T {
	t.Helper()
	if v, ok := built.Load(key); ok {
		return v.(T)
	}
	v := build()
	built.Store(key, v)
	return v
}

func buildStaticNow(t *testing.T, pkg string) []byte {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bin")
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	return data
}

// buildTestModules compiles, against Debian's headers, kmmkit_a (needs
// kmmkit_b, takes "who", exports a symbol), kmmkit_b (exports a symbol,
// loads kmmkit/test.bin) and kmmkit_c (needs kmmkit_a; its init fails).
func buildTestModules(t *testing.T, kver string) (a, b, c []byte) {
	t.Helper()
	kos := once(t, "kmods "+kver, func() [3][]byte {
		a, b, c := buildTestModulesNow(t, kver)
		return [3][]byte{a, b, c}
	})
	return kos[0], kos[1], kos[2]
}

func buildTestModulesNow(t *testing.T, kver string) (a, b, c []byte) {
	t.Helper()
	headers := "/usr/src/linux-headers-" + kver
	_, err := os.Stat(headers)
	testenv.Need(t, "linux-headers-"+kver, err == nil, "apt-get install linux-headers-"+kver)
	dir := t.TempDir()
	for _, f := range []string{"kmmkit_a.c", "kmmkit_b.c", "kmmkit_c.c"} {
		data, err := os.ReadFile(filepath.Join("testdata", "kmods", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
	}
	// testdata's Kbuild builds a and b, for the image builders' tests.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Kbuild"), []byte("obj-m += kmmkit_a.o kmmkit_b.o kmmkit_c.o\n"), 0o644))
	out, err := exec.Command("make", "-s", "-C", headers, "M="+dir, "modules").CombinedOutput()
	require.NoError(t, err, "%s", out)
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		return data
	}
	return read("kmmkit_a.ko"), read("kmmkit_b.ko"), read("kmmkit_c.ko")
}

// withVermagic returns a copy of a module whose .modinfo vermagic is
// replaced in place by v, padded with NULs to the same length (the kernel
// skips empty .modinfo strings).
func withVermagic(t *testing.T, ko []byte, old, v string) []byte {
	t.Helper()
	require.LessOrEqual(t, len(v), len(old))
	from := []byte("vermagic=" + old + "\x00")
	require.Equal(t, 1, bytes.Count(ko, from), "the module's vermagic is %q", old)
	to := append([]byte("vermagic="+v), make([]byte, len(old)-len(v)+1)...)
	return bytes.Replace(ko, from, to, 1)
}

// outOfTreePair is the worker's whole job: an image with kmmkit_a (which
// needs kmmkit_b and takes who=<who>) and kmmkit_b (which reads its
// firmware), crc7 loaded first and removed as in-tree; the parameters and
// the copied firmware are reported.
func outOfTreePair(t *testing.T, who string) vmScenario {
	t.Helper()
	_, kver := testenv.KernelTree(t)
	a, b, _ := buildTestModules(t, kver)
	mods := "opt/lib/modules/" + kver + "/extra/"
	return vmScenario{
		image:   vmImage{mods + "kmmkit_a.ko": a, mods + "kmmkit_b.ko": b, "firmware/kmmkit/test.bin": bytes.Repeat([]byte{0xfa}, 1234)},
		preload: []string{"kernel/lib/crc7.ko"},
		config: v1beta1.ModuleConfig{
			ContainerImage:        "registry.example.com/kmmkit/test:" + kver,
			InTreeModulesToRemove: []string{"crc7"},
			Modprobe: v1beta1.ModprobeSpec{
				ModuleName: "kmmkit_a", DirName: "/opt", Parameters: []string{"who=" + who}, FirmwarePath: "/firmware",
			},
		},
		params: []string{"kmmkit_a/who", "kmmkit_b/fw_size", "firmware_class/path"},
		files:  []string{"/lib/firmware-kmm/kmmkit/test.bin"},
	}
}

// TestVMWorkerOutOfTreePair is the worker's whole job on a real kernel:
// remove an in-tree module, copy firmware and point the kernel at it,
// load a module that needs another with a parameter, then unload and
// remove the firmware.
func TestVMWorkerOutOfTreePair(t *testing.T) {
	s := outOfTreePair(t, "kmmkit")
	s.firmware = "/lib/firmware-kmm"
	s.actions = []string{"load", "load", "unload"}
	res := bootWorker(t, s)
	assert.Equal(t, "crc7", res["start-modules"], "the in-tree module is loaded first")
	assert.Equal(t, "crc7,kmmkit_b,kmmkit_a", res["load0-changed"], "in-tree module removed, then b before a")
	assert.Equal(t, "kmmkit_a,kmmkit_b", res["load0-modules"])
	assert.Equal(t, "kmmkit", res["load0-param kmmkit_a/who"])
	assert.Equal(t, "1234", res["load0-param kmmkit_b/fw_size"], "kmmkit_b read the firmware we copied")
	assert.Equal(t, "/lib/firmware-kmm", res["load0-param firmware_class/path"])
	assert.Equal(t, "1234 bytes", res["load0-file /lib/firmware-kmm/kmmkit/test.bin"])
	assert.Equal(t, "", res["load1-changed"], "loading again changes nothing")
	assert.Equal(t, "kmmkit_a,kmmkit_b", res["unload2-changed"])
	assert.Equal(t, "", res["unload2-modules"])
	assert.Equal(t, "absent", res["unload2-file /lib/firmware-kmm/kmmkit/test.bin"], "the firmware we copied is removed")
}

// TestVMKMMWorkerCommandLine runs the worker binary with the command
// line KMM's operator gives its worker container (the image's entrypoint,
// /kmm worker, then LoaderPodTemplate's and UnloaderPodTemplate's args),
// on the files as KMM's worker Pod has them: the config at
// /etc/kmm-worker/config.yaml, the image's modules and firmware copied to
// /tmp by KMM's init container. It does the whole job of
// TestVMWorkerOutOfTreePair on a real kernel.
func TestVMKMMWorkerCommandLine(t *testing.T) {
	_, kver := testenv.KernelTree(t)
	mods := "opt/lib/modules/" + kver + "/extra/"
	kmmArgs := func(action string) []string {
		return []string{"/kmm", "worker", "kmod", action, "/etc/kmm-worker/config.yaml", "--firmware-path", "/lib/firmware-kmm"}
	}
	s := outOfTreePair(t, "kmm")
	s.configFile, s.imageRoot = "/etc/kmm-worker/config.yaml", "/tmp"
	s.commands = [][]string{kmmArgs("load"), kmmArgs("unload")}
	res := bootWorker(t, s)
	assert.Equal(t, "0", res["cmd0-exit"], res["cmd0-output"])
	assert.Contains(t, res["cmd0-output"], "\nloaded: crc7,kmmkit_b,kmmkit_a; unchanged:")
	assert.Contains(t, res["cmd0-output"], `"msg"="insmod" "module"="kmmkit_a" "path"="/tmp/`+mods+`kmmkit_a.ko" "params"="who=kmm"`,
		"the image content is read where KMM's init container copies it; modprobe -v's lines go to the container log")
	assert.Equal(t, "kmmkit_a,kmmkit_b", res["cmd0-modules"])
	assert.Equal(t, "kmm", res["cmd0-param kmmkit_a/who"])
	assert.Equal(t, "1234", res["cmd0-param kmmkit_b/fw_size"], "kmmkit_b read the firmware the worker copied")
	assert.Equal(t, "/lib/firmware-kmm", res["cmd0-param firmware_class/path"])
	assert.Equal(t, "0", res["cmd1-exit"], res["cmd1-output"])
	assert.Contains(t, res["cmd1-output"], "\nunloaded: kmmkit_a,kmmkit_b; unchanged:")
	assert.Equal(t, "", res["cmd1-modules"])
	assert.Equal(t, "absent", res["cmd1-file /lib/firmware-kmm/kmmkit/test.bin"])
}

// TestVMWorkerErrors shows the errors a user gets on a real kernel: a
// module built for another kernel, a dependency missing from the image,
// and a file the kernel refuses.
func TestVMWorkerErrors(t *testing.T) {
	_, kver := testenv.KernelTree(t)
	a, _, _ := buildTestModules(t, kver)
	mods := "opt/lib/modules/" + kver + "/extra/"
	cfg := func(name string) v1beta1.ModuleConfig {
		return v1beta1.ModuleConfig{Modprobe: v1beta1.ModprobeSpec{ModuleName: name, DirName: "/opt"}}
	}
	res := bootWorker(t, vmScenario{
		image: vmImage{
			mods + "kmmkit_a.ko":  a, // kmmkit_b is missing from this image
			mods + "foreign.ko":   elftest.Module{Modinfo: []string{"vermagic=5.14.0-284.el9.x86_64 SMP mod_unload"}}.Bytes(),
			mods + "notmodule.ko": elftest.Module{Modinfo: []string{"vermagic=" + kver + " SMP preempt mod_unload modversions"}}.Bytes(),
		},
		config:  cfg("kmmkit_a"),
		actions: []string{"load"},
	})
	assert.Contains(t, res["load0-error"], "load kmmkit_a")
	assert.Contains(t, res["load0-error"], "a dependency is missing", res["load0-error"])
	assert.Equal(t, "", res["load0-modules"])

	for name, want := range map[string]*regexp.Regexp{
		"foreign": regexp.MustCompile(`vermagic mismatch: built for "5.14.0-284.el9.x86_64", running "6\.1\.0-\d+-amd64" ` +
			`\(module vermagic "5.14.0-284.el9.x86_64 SMP preempt mod_unload modversions ", kernel vermagic "6\.1\.0-\d+-amd64 SMP preempt mod_unload modversions "\)`),
		"notmodule": regexp.MustCompile(`exec format error: invalid module format`),
	} {
		res := bootWorker(t, vmScenario{
			image:   vmImage{mods + name + ".ko": elftest.Module{Modinfo: []string{"vermagic=" + map[string]string{"foreign": "5.14.0-284.el9.x86_64", "notmodule": kver}[name] + " SMP preempt mod_unload modversions "}}.Bytes()},
			config:  cfg(name),
			actions: []string{"load"},
		})
		assert.Regexp(t, want, res["load0-error"], name)
	}
}

// TestVMLoadDebianModules loads async_raid6_recov, which needs six other
// modules, into Debian's 6.1 kernel, then unloads it all; one module is
// shipped xz-compressed, which 6.1 cannot decompress itself.
func TestVMLoadDebianModules(t *testing.T) {
	root, kver := testenv.KernelTree(t)
	image := vmImage{}
	for _, p := range []string{
		"kernel/crypto/async_tx/async_raid6_recov.ko", "kernel/crypto/async_tx/async_memcpy.ko",
		"kernel/crypto/async_tx/async_pq.ko", "kernel/crypto/async_tx/async_xor.ko",
		"kernel/crypto/async_tx/async_tx.ko", "kernel/lib/raid6/raid6_pq.ko",
	} {
		data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, p))
		require.NoError(t, err)
		image["opt/lib/modules/"+kver+"/"+p] = data
	}
	xorData, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, "kernel/crypto/xor.ko"))
	require.NoError(t, err)
	xorXZ, err := elftest.XZ(xorData)
	require.NoError(t, err)
	image["opt/lib/modules/"+kver+"/kernel/crypto/xor.ko.xz"] = xorXZ

	res := bootWorker(t, vmScenario{
		image:   image,
		config:  v1beta1.ModuleConfig{Modprobe: v1beta1.ModprobeSpec{ModuleName: "async_raid6_recov", DirName: "/opt"}},
		actions: []string{"load", "unload"},
	})
	assert.Equal(t, kver, res["kernel"])
	order := strings.Split(res["load0-changed"], ",")
	require.Len(t, order, 7, res["load0-error"])
	pos := map[string]int{}
	for i, m := range order {
		pos[m] = i
	}
	for _, dep := range [][2]string{ // each module after what it uses
		{"raid6_pq", "async_pq"}, {"xor", "async_xor"}, {"async_tx", "async_xor"}, {"async_tx", "async_memcpy"},
		{"async_xor", "async_pq"}, {"async_pq", "async_raid6_recov"}, {"async_memcpy", "async_raid6_recov"},
	} {
		assert.Less(t, pos[dep[0]], pos[dep[1]], "%s must load before %s: %v", dep[0], dep[1], order)
	}
	assert.Equal(t, "async_raid6_recov", order[6])
	for _, m := range order {
		assert.Contains(t, ","+res["load0-modules"]+",", ","+m+",")
	}
	for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
		order[i], order[j] = order[j], order[i]
	}
	assert.Equal(t, strings.Join(order, ","), res["unload1-changed"], "unloading goes in reverse")
	assert.Equal(t, "", res["unload1-modules"])
}

// TestVMWorkerLeavesTheNodeAsItWas proves the trust rules on Debian's
// kernel: a module whose vermagic differs from the kernel's only in its
// flags is refused before anything loads, naming both strings; a chain
// whose last module fails after its dependencies loaded is rolled back;
// args and rawArgs run as modprobe would, a rawArgs command without -d
// loading from the host's /lib/modules.
func TestVMWorkerLeavesTheNodeAsItWas(t *testing.T) {
	_, kver := testenv.KernelTree(t)
	a, b, c := buildTestModules(t, kver)
	flags := " SMP preempt mod_unload modversions "
	mods := "opt/lib/modules/" + kver + "/extra/"
	image := vmImage{
		mods + "kmmkit_a.ko": a, mods + "kmmkit_b.ko": b, mods + "kmmkit_c.ko": c,
		// kmmkit_c as built for a kernel without preemption (it exports
		// nothing, so it takes no other module's place in the tree).
		mods + "kmmkit_np.ko": withVermagic(t, c, kver+flags, kver+" SMP mod_unload modversions "),
	}
	named := func(name string, args *v1beta1.ModprobeArgs) v1beta1.ModuleConfig {
		return v1beta1.ModuleConfig{Modprobe: v1beta1.ModprobeSpec{ModuleName: name, DirName: "/opt", Args: args}}
	}
	raw := func(load, unload []string) v1beta1.ModuleConfig {
		return v1beta1.ModuleConfig{Modprobe: v1beta1.ModprobeSpec{DirName: "/opt", RawArgs: &v1beta1.ModprobeArgs{Load: load, Unload: unload}}}
	}
	firstTime := &v1beta1.ModprobeArgs{Load: []string{"--first-time"}, Unload: []string{"--first-time"}}
	res := bootWorker(t, vmScenario{
		image: image,
		configs: []v1beta1.ModuleConfig{
			named("kmmkit_c", nil),
			named("kmmkit_np", nil),
			named("kmmkit_a", firstTime),
			named("kmmkit_a", firstTime),
			raw([]string{"-v", "-d", "/tmp/opt", "-a", "kmmkit_b"}, []string{"-rv", "-d", "/tmp/opt", "kmmkit_a"}),
			raw([]string{"-v", "crc7"}, []string{"-r", "crc7"}),
			raw([]string{"-v", "crc7"}, []string{"-r", "crc7"}),
		},
		actions: []string{"load", "load", "load", "load", "unload", "load", "unload"},
		dmesg:   "kmmkit",
	})
	path := func(m string) string { return "/image/" + mods + m + ".ko" }

	assert.Equal(t, "load kmmkit_c ("+path("kmmkit_c")+"): no such device; rolled back: kmmkit_a, kmmkit_b", res["load0-error"])
	assert.Equal(t, "", res["load0-modules"], "nothing stays loaded")
	assert.Contains(t, res["load0-dmesg"], "kmmkit_c: world, failing on purpose", "kmmkit_c's init ran, after its dependencies loaded")
	assert.Contains(t, res["load0-dmesg"], "kmmkit_b: unloaded")

	assert.Equal(t, "load kmmkit_np ("+path("kmmkit_np")+`): vermagic mismatch: module vermagic "`+kver+` SMP mod_unload modversions ", kernel vermagic "`+kver+flags+`": `+
		"same release, other flags (the module lacks preempt): the module was built with another kernel configuration: build it against the headers of "+kver, res["load1-error"])
	assert.Equal(t, "", res["load1-modules"], "not even its dependencies were loaded")

	assert.Equal(t, "kmmkit_b,kmmkit_a", res["load2-changed"])
	assert.Equal(t, "load kmmkit_a ("+path("kmmkit_a")+"): already in the kernel (modprobe --first-time)", res["load3-error"])
	assert.Equal(t, "kmmkit_a,kmmkit_b", res["unload4-changed"], "rawArgs -r with -d: the image's kmmkit_a and its dependency")
	assert.Equal(t, "crc7", res["load5-changed"], "rawArgs without -d: crc7 from the host's /lib/modules")
	assert.Equal(t, "crc7", res["load5-modules"])
	assert.Equal(t, "crc7", res["unload6-changed"])
	assert.Contains(t, res["log"], `"msg"="insmod" "module"="kmmkit_b" "path"="`+path("kmmkit_b")+`"`, "-v logs each insmod")
	assert.NotContains(t, res["log"], "cannot learn the running kernel's vermagic")
}

// TestVMVermagicFallback: without the host's /lib/modules the worker
// cannot learn the kernel's vermagic; it says so and checks the release
// only, and the kernel refuses the module with its bare "invalid module
// format" (and, in dmesg, the two strings).
func TestVMVermagicFallback(t *testing.T) {
	_, kver := testenv.KernelTree(t)
	_, b, _ := buildTestModules(t, kver)
	mods := "opt/lib/modules/" + kver + "/extra/"
	res := bootWorker(t, vmScenario{
		image:         vmImage{mods + "kmmkit_np.ko": withVermagic(t, b, kver+" SMP preempt mod_unload modversions ", kver+" SMP mod_unload modversions ")},
		config:        v1beta1.ModuleConfig{Modprobe: v1beta1.ModprobeSpec{ModuleName: "kmmkit_np", DirName: "/opt"}},
		actions:       []string{"load"},
		noHostModules: true,
		dmesg:         "version magic",
	})
	assert.Equal(t, "load kmmkit_np (/image/"+mods+"kmmkit_np.ko): exec format error: invalid module format: the module was built for another kernel or architecture (see dmesg)", res["load0-error"])
	assert.Contains(t, res["log"], `"msg"="cannot learn the running kernel's vermagic; checking only that modules are built for its release" "release"="`+kver+`" "reason"="no in-tree module of the running kernel found under /lib/modules/`+kver)
	assert.Contains(t, res["load0-dmesg"], "kmmkit_b: version magic '"+kver+" SMP mod_unload modversions ' should be '"+kver+" SMP preempt mod_unload modversions '",
		"the kernel refuses it for the reason the worker checks")
}

// TestVMModuleInUse: on Debian's kernel, a module another module uses
// (kmmkit_a needs kmmkit_b's exported symbol) is not unloaded: the error
// carries reason.ModuleInUse and names the holder from
// /sys/module/kmmkit_b/holders; once the holder is unloaded, it goes. A
// module whose device a process holds open (loop, /dev/loop0) has a
// reference count and no holder, and is refused for that; once the
// device is closed it unloads. The worker binary's last line, its Pod's
// termination message, carries the reason to the cluster side.
func TestVMModuleInUse(t *testing.T) {
	root, kver := testenv.KernelTree(t)
	a, b, _ := buildTestModules(t, kver)
	loop, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, "kernel", "drivers", "block", "loop.ko"))
	require.NoError(t, err)
	mods := "opt/lib/modules/" + kver + "/"
	named := func(name string) v1beta1.ModuleConfig {
		return v1beta1.ModuleConfig{Modprobe: v1beta1.ModprobeSpec{ModuleName: name, DirName: "/opt"}}
	}
	unloadB, err := yaml.Marshal(v1beta1.ModuleConfig{KernelVersion: kver, ContainerImage: "registry.example.com/kmmkit/test:" + kver,
		Modprobe: v1beta1.ModprobeSpec{ModuleName: "kmmkit_b", DirName: "/opt"}})
	require.NoError(t, err)
	worker := func(action, config string) []string {
		return []string{"/kmm", "worker", action, "--config", config, "--image-dir", "/image"}
	}
	s := vmScenario{
		image: vmImage{mods + "extra/kmmkit_a.ko": a, mods + "extra/kmmkit_b.ko": b, mods + "kernel/drivers/block/loop.ko": loop,
			"cfg/unload-b.yaml": unloadB},
		configs: []v1beta1.ModuleConfig{
			named("kmmkit_a"), named("kmmkit_b"), named("kmmkit_a"),
			named("loop"), named("loop"), named("loop"),
		},
		actions: []string{"load", "unload", "unload", "load", "unload", "unload"},
		holds:   []vmHold{{Device: "/dev/loop0", After: 3, Until: 4}},
		config: v1beta1.ModuleConfig{ContainerImage: "registry.example.com/kmmkit/test:" + kver,
			Modprobe: v1beta1.ModprobeSpec{ModuleName: "kmmkit_a", DirName: "/opt"}},
		configFile: "/etc/kmmkit/worker.yaml",
		commands: [][]string{
			worker("load", "/etc/kmmkit/worker.yaml"),
			worker("unload", "/image/cfg/unload-b.yaml"),
			worker("unload", "/etc/kmmkit/worker.yaml"),
			worker("unload", "/image/cfg/unload-b.yaml"),
		},
	}
	res := bootWorker(t, s)
	assert.Equal(t, "kmmkit_b,kmmkit_a", res["load0-changed"], res["load0-error"])
	assert.Equal(t, "unload kmmkit_b: in use by kmmkit_a", res["unload1-error"])
	assert.Equal(t, string(reason.ModuleInUse), res["unload1-reason"])
	assert.Equal(t, "kmmkit_a,kmmkit_b", res["unload1-modules"], "nothing was unloaded")
	assert.Equal(t, "kmmkit_a,kmmkit_b", res["unload2-changed"], "with its holder gone first, it unloads: "+res["unload2-error"])
	assert.Equal(t, "", res["unload2-modules"])

	assert.Equal(t, "loop", res["load3-changed"], res["load3-error"])
	assert.Equal(t, "<nil>", res["load3-hold /dev/loop0"])
	assert.Equal(t, "unload loop: in use (reference count 1): a process holds its device, or another kernel user", res["unload4-error"])
	assert.Equal(t, string(reason.ModuleInUse), res["unload4-reason"])
	assert.Equal(t, "loop", res["unload4-modules"])
	assert.Equal(t, "<nil>", res["unload4-close /dev/loop0"])
	assert.Equal(t, "loop", res["unload5-changed"], "once the device is closed, it unloads: "+res["unload5-error"])

	assert.Equal(t, "0", res["cmd0-exit"], res["cmd0-output"])
	assert.Equal(t, "2", res["cmd1-exit"], res["cmd1-output"])
	lines := strings.Split(res["cmd1-output"], "\n")
	assert.Equal(t, "kmm worker unload: unload kmmkit_b: in use by kmmkit_a [ModuleInUse]", lines[len(lines)-1],
		"the last line, the termination message, names the holder and the reason")
	assert.Equal(t, "kmmkit_a,kmmkit_b", res["cmd1-modules"])
	assert.Equal(t, "0", res["cmd2-exit"], res["cmd2-output"])
	assert.Equal(t, "0", res["cmd3-exit"], "kmmkit_b went with kmmkit_a; unloading it again is nothing to do: "+res["cmd3-output"])
	assert.Equal(t, "", res["cmd3-modules"])
}

// buildVersioned compiles, against Debian's headers, kmmkit_v: a module
// with MODULE_VERSION (so modpost stamps a srcversion) whose source
// differs by greeting, so two greetings are two builds of one module.
func buildVersioned(t *testing.T, kver, greeting string) []byte {
	t.Helper()
	return once(t, "kmmkit_v "+kver+" "+greeting, func() []byte {
		headers := "/usr/src/linux-headers-" + kver
		_, err := os.Stat(headers)
		testenv.Need(t, "linux-headers-"+kver, err == nil, "apt-get install linux-headers-"+kver)
		dir := t.TempDir()
		src := "#include <linux/module.h>\n\n" +
			"static int __init kmmkit_v_init(void)\n{\n\tpr_info(\"kmmkit_v: " + greeting + "\\n\");\n\treturn 0;\n}\n\n" +
			"static void __exit kmmkit_v_exit(void)\n{\n}\n\n" +
			"module_init(kmmkit_v_init);\nmodule_exit(kmmkit_v_exit);\n" +
			"MODULE_LICENSE(\"GPL\");\nMODULE_VERSION(\"1.0\");\nMODULE_DESCRIPTION(\"kmmkit test module v, built twice\");\n"
		require.NoError(t, os.WriteFile(filepath.Join(dir, "kmmkit_v.c"), []byte(src), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "Kbuild"), []byte("obj-m += kmmkit_v.o\n"), 0o644))
		out, err := exec.Command("make", "-s", "-C", headers, "M="+dir, "modules").CombinedOutput()
		require.NoError(t, err, "%s", out)
		data, err := os.ReadFile(filepath.Join(dir, "kmmkit_v.ko"))
		require.NoError(t, err)
		return data
	})
}

// TestVMModuleBuildMismatch: with build 1 of kmmkit_v in the kernel, a
// load from an image with build 2 (same name and version, other source,
// so another srcversion) is refused with reason.ModuleBuildMismatch,
// naming both srcversions, and changes nothing; build 1's image loads
// as a no-op, and once build 1 is unloaded build 2 loads and is what
// the kernel runs.
func TestVMModuleBuildMismatch(t *testing.T) {
	_, kver := testenv.KernelTree(t)
	v1, v2 := buildVersioned(t, kver, "build one"), buildVersioned(t, kver, "build two")
	src := func(ko []byte) string {
		info, err := modfile.ParseInfo(ko)
		require.NoError(t, err)
		for _, kv := range info {
			if kv.Key == "srcversion" {
				return kv.Value
			}
		}
		t.Fatalf("the module has no srcversion")
		return ""
	}
	src1, src2 := src(v1), src(v2)
	require.NotEqual(t, src1, src2, "two sources, two srcversions")
	from := func(dir string) v1beta1.ModuleConfig {
		return v1beta1.ModuleConfig{Modprobe: v1beta1.ModprobeSpec{ModuleName: "kmmkit_v", DirName: dir}}
	}
	s := vmScenario{
		image: vmImage{
			"opt/lib/modules/" + kver + "/extra/kmmkit_v.ko":  v1,
			"opt2/lib/modules/" + kver + "/extra/kmmkit_v.ko": v2,
		},
		configs: []v1beta1.ModuleConfig{from("/opt"), from("/opt2"), from("/opt"), from("/opt"), from("/opt2")},
		actions: []string{"load", "load", "load", "unload", "load"},
	}
	res := bootWorker(t, s)
	assert.Equal(t, "kmmkit_v", res["load0-changed"], res["load0-error"])
	assert.Equal(t, src1, res["load0-srcversion"])
	assert.Equal(t, "load kmmkit_v (/image/opt2/lib/modules/"+kver+"/extra/kmmkit_v.ko): the kernel runs kmmkit_v srcversion "+src1+
		", the image's file has srcversion "+src2+": another build of the module is loaded: unload it first (or let kmmkit's upgrade do it)",
		res["load1-error"])
	assert.Equal(t, string(reason.ModuleBuildMismatch), res["load1-reason"])
	assert.Equal(t, "kmmkit_v", res["load1-modules"], "build 1 stays")
	assert.Equal(t, "", res["load2-changed"], "build 1's image: already loaded, nothing to do: "+res["load2-error"])
	assert.Equal(t, src1, res["load2-srcversion"])
	assert.Equal(t, "kmmkit_v", res["unload3-changed"], res["unload3-error"])
	assert.Equal(t, "kmmkit_v", res["load4-changed"], res["load4-error"])
	assert.Equal(t, src2, res["load4-srcversion"], "the kernel runs build 2")
}
