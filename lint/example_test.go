package lint_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/lint"
)

// Lint the tree a Dockerfile build has just laid out, before it is
// pushed: one module was built for another kernel.
func ExampleTree() {
	root, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(root)
	dir := filepath.Join(root, "opt", "lib", "modules", "6.1.0-57-amd64", "extra")
	_ = os.MkdirAll(dir, 0o755)
	for name, vermagic := range map[string]string{"nic.ko": "6.1.0-57-amd64 SMP preempt mod_unload ", "nic_core.ko": "6.1.0-55-amd64 SMP preempt mod_unload "} {
		_ = os.WriteFile(filepath.Join(dir, name), elftest.Module{Modinfo: []string{"vermagic=" + vermagic}}.Bytes(), 0o644)
	}
	ctx := context.Background()
	_, _ = depmod.Run(ctx, depmod.Options{BaseDir: filepath.Join(root, "opt"), KernelVersion: "6.1.0-57-amd64", ConfigPaths: []string{}})

	rep, err := lint.Tree(ctx, root, "6.1.0-57-amd64", lint.WithModules("nic"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range rep.Findings {
		fmt.Println(f.File, f.Rule)
	}
	// Output: /opt/lib/modules/6.1.0-57-amd64/extra/nic_core.ko vermagic-release
}
