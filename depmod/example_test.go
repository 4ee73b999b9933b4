package depmod_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/depmod/index"
)

// Replace `RUN depmod -b /opt ${KERNEL_FULL_VERSION}` in a kmod image
// build, then resolve a module's dependencies from the binary index the
// way modprobe does.
func ExampleRun() {
	base, _ := os.MkdirTemp("", "depmod-example")
	defer os.RemoveAll(base)
	kver := "6.1.0-56-amd64"
	_ = os.MkdirAll(filepath.Join(base, "lib", "modules", kver, "extra"), 0o755)
	// (copy the .ko files of your image into base/lib/modules/<kver>/extra)

	res, err := depmod.Run(context.Background(), depmod.Options{
		BaseDir:       base,
		KernelVersion: kver,
		ConfigPaths:   []string{}, // ignore the host's /etc/depmod.d
		Log:           logr.Discard(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("indexed", res.Modules, "modules into", filepath.Base(res.OutputDir))

	deps, err := index.Open(filepath.Join(res.OutputDir, "modules.dep.bin"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, found, _ := deps.Lookup("kmm_ci_a")
	fmt.Println("kmm_ci_a found:", found)
	// Output:
	// indexed 0 modules into 6.1.0-56-amd64
	// kmm_ci_a found: false
}
