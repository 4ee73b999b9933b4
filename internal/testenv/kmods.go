package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestModules compiles kmmkit's test modules (loader/node/testdata/kmods)
// against the headers of kernel kver (/usr/src/linux-headers-<kver>), or
// stops the test as Need does when they are not installed: kmmkit_a needs
// kmmkit_b, takes the parameter "who" and exports a symbol; kmmkit_b
// exports a symbol and reads the firmware kmmkit/test.bin; kmmkit_c needs
// kmmkit_a and its init fails. It returns each file's content by name
// ("kmmkit_a.ko").
func TestModules(t testing.TB, kver string) map[string][]byte {
	t.Helper()
	headers := "/usr/src/linux-headers-" + kver
	_, err := os.Stat(headers)
	Need(t, "linux-headers-"+kver, err == nil, "apt-get install linux-headers-"+kver)
	src := filepath.Join(sourceRoot(t), "loader", "node", "testdata", "kmods")
	dir := t.TempDir()
	names := []string{"kmmkit_a", "kmmkit_b", "kmmkit_c"}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(src, n+".c"))
		if err != nil {
			t.Fatalf("test modules: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, n+".c"), data, 0o644); err != nil {
			t.Fatalf("test modules: %v", err)
		}
	}
	// testdata's Kbuild builds a and b, for the image builders' tests.
	if err := os.WriteFile(filepath.Join(dir, "Kbuild"), []byte("obj-m += kmmkit_a.o kmmkit_b.o kmmkit_c.o\n"), 0o644); err != nil {
		t.Fatalf("test modules: %v", err)
	}
	if out, err := exec.Command("make", "-s", "-C", headers, "M="+dir, "modules").CombinedOutput(); err != nil {
		t.Fatalf("building the test modules against %s: %v\n%s", headers, err, out)
	}
	mods := map[string][]byte{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n+".ko"))
		if err != nil {
			t.Fatalf("test modules: %v", err)
		}
		mods[n+".ko"] = data
	}
	return mods
}

// sourceRoot finds kmmkit's source root (the directory with go.mod and
// cmd/kmm) above the test's working directory.
func sourceRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("%v", err)
	}
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "cmd", "kmm", "main.go")); err == nil {
			return d
		}
	}
	t.Fatalf("no kmmkit source root above %s", dir)
	return ""
}
