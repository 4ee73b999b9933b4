package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// KernelTreeEnv names the root of an unpacked Debian linux-image package:
// it holds lib/modules/<version> and boot/.
const KernelTreeEnv = "KMMKIT_KERNEL_TREE"

// KernelTree returns the root of the unpacked Debian kernel package and
// its kernel version, or stops the test as Need does.
func KernelTree(t testing.TB) (root, version string) {
	t.Helper()
	root = os.Getenv(KernelTreeEnv)
	Need(t, "a Debian kernel module tree", root != "", KernelTreeEnv+" is not set; hack/lib/deps.sh unpacks linux-image-*-amd64 and hack/test.sh sets it")
	entries, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("%s=%s: want exactly one lib/modules/<version> (err %v)", KernelTreeEnv, root, err)
	}
	return root, entries[0].Name()
}
