package loader

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
)

// vmCase is one boot: modules copied from the Debian tree, what to load,
// and an extra module file to add.
type vmCase struct {
	copy   []string // paths relative to lib/modules/<kver>
	extra  map[string][]byte
	module string
	params []string
	unload bool
}

// bootVM builds the module tree with our depmod, packs it with vminit and
// boots Debian's kernel on it.
func bootVM(t *testing.T, c vmCase) map[string]string {
	t.Helper()
	qemu := testenv.LookPath(t, "qemu-system-x86_64", "apt-get install qemu-system-x86")
	root, kver := testenv.KernelTree(t)
	src := filepath.Join(root, "lib", "modules", kver)

	treeRoot := t.TempDir()
	files := map[string]vmtest.File{}
	dst := filepath.Join(treeRoot, "lib", "modules", kver)
	for _, p := range c.copy {
		data, err := os.ReadFile(filepath.Join(src, p))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dst, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dst, p), data, 0o644))
	}
	for p, data := range c.extra {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dst, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dst, p), data, 0o644))
	}
	_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: treeRoot, KernelVersion: kver, ConfigPaths: []string{}})
	require.NoError(t, err)
	require.NoError(t, filepath.Walk(treeRoot, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(treeRoot, p)
		files["/mods/"+rel] = vmtest.File{Data: data}
		return nil
	}))

	initBin := filepath.Join(t.TempDir(), "init")
	build := exec.Command("go", "build", "-o", initBin, "./internal/vminit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	initData, err := os.ReadFile(initBin)
	require.NoError(t, err)
	files["/init"] = vmtest.File{Data: initData, Mode: 0o755}
	cfg, err := json.Marshal(map[string]any{"root": "/mods", "kernelVersion": kver, "module": c.module, "parameters": c.params, "unload": c.unload})
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

// TestVMLoadDebianModules loads async_raid6_recov, which needs six other
// modules, into Debian's 6.1 kernel, then unloads it all.
func TestVMLoadDebianModules(t *testing.T) {
	res := bootVM(t, vmCase{
		copy: []string{
			"kernel/crypto/async_tx/async_raid6_recov.ko", "kernel/crypto/async_tx/async_memcpy.ko",
			"kernel/crypto/async_tx/async_pq.ko", "kernel/crypto/async_tx/async_xor.ko",
			"kernel/crypto/async_tx/async_tx.ko", "kernel/crypto/xor.ko", "kernel/lib/raid6/raid6_pq.ko",
			"kernel/lib/crc7.ko",
		},
		module: "async_raid6_recov",
		unload: true,
	})
	_, root := testenvKernel(t)
	assert.Equal(t, root, res["kernel"])
	assert.Empty(t, res["load-error"])
	order := strings.Split(res["loaded"], ",")
	require.Len(t, order, 7, res["loaded"])
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
	for _, m := range []string{"async_raid6_recov", "async_memcpy", "async_pq", "async_xor", "async_tx", "xor", "raid6_pq"} {
		assert.Contains(t, ","+res["modules-after-load"]+",", ","+m+",")
	}
	assert.NotContains(t, res["modules-after-load"], "crc7", "only what was asked for")
	assert.Equal(t, "0", res["reload-changed"], "loading again changes nothing")
	assert.Empty(t, res["unload-error"])
	for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
		order[i], order[j] = order[j], order[i]
	}
	assert.Equal(t, strings.Join(order, ","), res["unloaded"], "unloading goes in reverse")
	assert.Equal(t, "", res["modules-after-unload"])
}

// TestVMLoadErrors boots modules the kernel must refuse: one built for
// another kernel (caught before the kernel sees it) and a valid ELF that is
// no module the kernel accepts.
func TestVMLoadErrors(t *testing.T) {
	res := bootVM(t, vmCase{
		extra: map[string][]byte{
			"extra/foreign.ko": elftest.Module{Modinfo: []string{"name=foreign", "vermagic=5.14.0-284.el9.x86_64 SMP mod_unload"}}.Bytes(),
		},
		module: "foreign",
	})
	assert.Regexp(t, regexp.MustCompile(`vermagic mismatch: built for "5.14.0-284.el9.x86_64", running "6\.1\.0-\d+-amd64"`), res["load-error"])

	// Right vermagic, but no module structure: the kernel itself refuses
	// it, and the error says what that means.
	_, kver := testenvKernel(t)
	res = bootVM(t, vmCase{
		extra: map[string][]byte{
			"extra/fake.ko": elftest.Module{Modinfo: []string{"name=fake", "vermagic=" + kver + " SMP preempt mod_unload modversions"}}.Bytes(),
		},
		module: "fake",
		params: []string{"x=1"},
	})
	assert.Contains(t, res["load-error"], "load fake")
	assert.Contains(t, res["load-error"], "exec format error: invalid module format")
	assert.Equal(t, "", res["modules-after-load"])
}

func testenvKernel(t *testing.T) (string, string) {
	root, kver := testenv.KernelTree(t)
	return root, kver
}

// TestVMLoadCompressed loads an xz-compressed Debian module. Linux 6.1
// does not know finit_module's decompression flag, so this goes through
// the in-process decompression into a memfd.
func TestVMLoadCompressed(t *testing.T) {
	root, kver := testenvKernel(t)
	data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, "kernel", "lib", "crc7.ko"))
	require.NoError(t, err)
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	require.NoError(t, err)
	_, err = w.Write(data)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	res := bootVM(t, vmCase{extra: map[string][]byte{"kernel/lib/crc7.ko.xz": b.Bytes()}, module: "crc7", unload: true})
	assert.Empty(t, res["load-error"])
	assert.Equal(t, "crc7", res["loaded"])
	assert.Equal(t, "crc7", res["modules-after-load"])
	assert.Equal(t, "crc7", res["unloaded"])
}
