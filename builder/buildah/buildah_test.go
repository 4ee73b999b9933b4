package buildah_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/buildah"
	"github.com/kmmkit/kmmkit/internal/buildahtest"
)

// TestBuildahMultiStage runs the shared buildah scenario with the buildah
// command.
func TestBuildahMultiStage(t *testing.T) {
	buildahtest.MultiStage(t, buildah.New)
}

// TestNewRefusesBadOptions: New names the option it cannot use.
func TestNewRefusesBadOptions(t *testing.T) {
	for want, opt := range map[string]buildah.Option{
		`buildah: WithIsolation("docker"): use chroot, oci or rootless`:         buildah.WithIsolation("docker"),
		`buildah: WithTimeout(0s): the timeout must be positive`:                buildah.WithTimeout(0),
		`buildah: WithVolumes("/usr"): a volume is HOST:CONTAINER[:OPTIONS]`:    buildah.WithVolumes("/usr"),
		`buildah: WithStorage("", "/run/x"): both directories are needed`:       buildah.WithStorage("", "/run/x"),
		`buildah: WithBinary(""): name the buildah executable`:                  buildah.WithBinary(""),
		`buildah: WithStorageDriver(""): name a storage driver (default "vfs")`: buildah.WithStorageDriver(""),
	} {
		_, err := buildah.New(opt)
		assert.EqualError(t, err, want)
	}
	b, err := buildah.New(buildah.WithIsolation("oci"), buildah.WithTimeout(time.Minute), buildah.WithVolumes("/usr:/usr:ro"))
	require.NoError(t, err)
	assert.NotNil(t, b)
}
