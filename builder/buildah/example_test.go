package buildah_test

import (
	"fmt"

	"github.com/kmmkit/kmmkit/builder/buildah"
)

// ExampleNew configures the buildah backend as it runs in a container:
// vfs storage and chroot isolation; a bad option is refused by New.
func ExampleNew() {
	b, err := buildah.New(buildah.WithStorageDriver("vfs"), buildah.WithIsolation("chroot"))
	fmt.Println(b != nil, err)

	_, err = buildah.New(buildah.WithIsolation("vm"))
	fmt.Println(err)
	// Output:
	// true <nil>
	// buildah: WithIsolation("vm"): use chroot, oci or rootless
}
