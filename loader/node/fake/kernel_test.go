package fake_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/loader/node/fake"
)

// exampleTree writes a module tree where a needs b, indexed, and returns
// its root and kernel version.
func exampleTree() (root, kver string) {
	root, _ = os.MkdirTemp("", "fake-kernel")
	kver = "6.1.0-56-amd64"
	dir := filepath.Join(root, "lib", "modules", kver, "extra")
	_ = os.MkdirAll(dir, 0o755)
	vermagic := "vermagic=" + kver + " " + fake.DefaultFlags
	b := elftest.Module{Modinfo: []string{"name=b", vermagic}, Exports: []elftest.Export{{Name: "b_fn"}}}
	a := elftest.Module{Modinfo: []string{"name=a", "depends=b", vermagic}, Needs: []elftest.Need{{Name: "b_fn"}}}
	_ = os.WriteFile(filepath.Join(dir, "b.ko"), b.Bytes(), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "a.ko"), a.Bytes(), 0o644)
	_, _ = depmod.Run(context.Background(), depmod.Options{BaseDir: root, KernelVersion: kver, ConfigPaths: []string{}})
	return root, kver
}

// Test code that loads modules without a kernel: give node.Native a
// fake.Kernel and check what it did.
func ExampleKernel() {
	root, kver := exampleTree()
	defer os.RemoveAll(root)

	k := fake.NewKernel(kver)
	native, _ := node.NewNative(k)
	tree, _ := node.OpenTree(root, kver)
	_, err := native.Load(context.Background(), node.Request{Tree: tree, Module: "a", Parameters: []string{"debug=1"}})
	fmt.Println(err, k.Events())
	_, err = native.Unload(context.Background(), node.Request{Tree: tree, Module: "a"})
	fmt.Println(err, k.Events()[2:])
	// Output:
	// <nil> [load b load a debug=1]
	// <nil> [unload a unload b]
}

// A failed load rolls back: with FailLoad the last module fails, and the
// one loaded before it is unloaded again.
func ExampleKernel_FailLoad() {
	root, kver := exampleTree()
	defer os.RemoveAll(root)

	k := fake.NewKernel(kver)
	k.FailLoad("a", syscall.ENODEV)
	native, _ := node.NewNative(k)
	tree, _ := node.OpenTree(root, kver)
	_, err := native.Load(context.Background(), node.Request{Tree: tree, Module: "a"})
	var le *node.Error
	errors.As(err, &le)
	fmt.Println(le.RolledBack, k.Events())
	// Output:
	// [b] [load b unload b]
}
