package loader_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/internal/vmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// vmImage is the content of a kmod image as the worker sees it: files by
// path under the image root. Modules go under /opt/lib/modules/<kver>.
type vmImage map[string][]byte

// vmScenario is one boot of Debian's kernel running the native worker.
type vmScenario struct {
	image    vmImage
	preload  []string // Debian modules (relative to lib/modules/<kver>) loaded first
	config   v1beta1.ModuleConfig
	actions  []string
	params   []string
	files    []string
	firmware string // host firmware path inside the VM
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
	_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: filepath.Join(imageDir, "opt"), KernelVersion: kver, ConfigPaths: []string{}})
	require.NoError(t, err)

	files := map[string]vmtest.File{}
	require.NoError(t, filepath.Walk(imageDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(imageDir, p)
		files["/image/"+rel] = vmtest.File{Data: data}
		return nil
	}))
	var preload []string
	for _, p := range s.preload {
		data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, p))
		require.NoError(t, err)
		files["/host/"+p] = vmtest.File{Data: data}
		preload = append(preload, "/host/"+p)
	}
	initBin := filepath.Join(t.TempDir(), "init")
	build := exec.Command("go", "build", "-o", initBin, "./internal/vminit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	initData, err := os.ReadFile(initBin)
	require.NoError(t, err)
	files["/init"] = vmtest.File{Data: initData, Mode: 0o755}
	s.config.KernelVersion = kver
	cfg, err := json.Marshal(map[string]any{
		"preload": preload, "worker": s.config, "imageRoot": "/image", "firmwareHostPath": s.firmware,
		"actions": s.actions, "params": s.params, "files": s.files,
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
			results[k] = v
		}
	}
	require.Contains(t, results, "done", "console:\n%s", console)
	t.Logf("VM said: %v", results)
	return results
}

// buildTestModules compiles kmmkit_a (needs kmmkit_b, takes "who") and
// kmmkit_b (exports a symbol, loads kmmkit/test.bin) against Debian's
// headers.
func buildTestModules(t *testing.T, kver string) (a, b []byte) {
	t.Helper()
	headers := "/usr/src/linux-headers-" + kver
	_, err := os.Stat(headers)
	testenv.Need(t, "linux-headers-"+kver, err == nil, "apt-get install linux-headers-"+kver)
	dir := t.TempDir()
	for _, f := range []string{"Kbuild", "kmmkit_a.c", "kmmkit_b.c"} {
		data, err := os.ReadFile(filepath.Join("testdata", "kmods", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
	}
	out, err := exec.Command("make", "-s", "-C", headers, "M="+dir, "modules").CombinedOutput()
	require.NoError(t, err, "%s", out)
	a, err = os.ReadFile(filepath.Join(dir, "kmmkit_a.ko"))
	require.NoError(t, err)
	b, err = os.ReadFile(filepath.Join(dir, "kmmkit_b.ko"))
	require.NoError(t, err)
	return a, b
}

// TestVMWorkerOutOfTreePair is the worker's whole job on a real kernel:
// remove an in-tree module, copy firmware and point the kernel at it,
// load a module that needs another with a parameter, then unload and
// remove the firmware.
func TestVMWorkerOutOfTreePair(t *testing.T) {
	_, kver := testenv.KernelTree(t)
	a, b := buildTestModules(t, kver)
	mods := "opt/lib/modules/" + kver + "/extra/"
	res := bootWorker(t, vmScenario{
		image:   vmImage{mods + "kmmkit_a.ko": a, mods + "kmmkit_b.ko": b, "firmware/kmmkit/test.bin": bytes.Repeat([]byte{0xfa}, 1234)},
		preload: []string{"kernel/lib/crc7.ko"},
		config: v1beta1.ModuleConfig{
			ContainerImage:        "registry.example.com/kmmkit/test:" + kver,
			InTreeModulesToRemove: []string{"crc7"},
			Modprobe: v1beta1.ModprobeSpec{
				ModuleName: "kmmkit_a", DirName: "/opt", Parameters: []string{"who=kmmkit"}, FirmwarePath: "/firmware",
			},
		},
		firmware: "/lib/firmware-kmm",
		actions:  []string{"load", "load", "unload"},
		params:   []string{"kmmkit_a/who", "kmmkit_b/fw_size", "firmware_class/path"},
		files:    []string{"/lib/firmware-kmm/kmmkit/test.bin"},
	})
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

// TestVMWorkerErrors shows the errors a user gets on a real kernel: a
// module built for another kernel, a dependency missing from the image,
// and a file the kernel refuses.
func TestVMWorkerErrors(t *testing.T) {
	_, kver := testenv.KernelTree(t)
	a, _ := buildTestModules(t, kver)
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
		"foreign":   regexp.MustCompile(`vermagic mismatch: built for "5.14.0-284.el9.x86_64", running "6\.1\.0-\d+-amd64"`),
		"notmodule": regexp.MustCompile(`exec format error: invalid module format`),
	} {
		res := bootWorker(t, vmScenario{
			image:   vmImage{mods + name + ".ko": elftest.Module{Modinfo: []string{"vermagic=" + map[string]string{"foreign": "5.14.0-284.el9.x86_64", "notmodule": kver}[name] + " SMP"}}.Bytes()},
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
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	require.NoError(t, err)
	_, err = w.Write(xorData)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	image["opt/lib/modules/"+kver+"/kernel/crypto/xor.ko.xz"] = b.Bytes()

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
