package depmod

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

// BenchmarkDebianTree runs depmod on a copy of the Debian kernel tree;
// hack/benchdepmod compares it with kmod's.
func BenchmarkDebianTree(b *testing.B) {
	root, kver := testenv.KernelTree(b)
	base := b.TempDir()
	dst := filepath.Join(base, "lib", "modules", kver)
	testenv.LinkTree(b, filepath.Join(root, "lib", "modules", kver), dst, testenv.TreeOptions{})
	for b.Loop() {
		if _, err := Run(context.Background(), Options{BaseDir: base, KernelVersion: kver, ConfigPaths: []string{}}); err != nil {
			b.Fatal(err)
		}
	}
}
