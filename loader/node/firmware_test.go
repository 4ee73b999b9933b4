package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/imagetest"
	"github.com/kmmkit/kmmkit/internal/safefs"
	"github.com/kmmkit/kmmkit/loader/node"
)

// firmwareSetup lays out an image (image/firmware/acme/nic.bin, and links
// an extraction could never leave but an --image-dir filled by someone
// else could), a host firmware directory, and a sibling host tree.
func firmwareSetup(t *testing.T) (base, image, hostFW, host string) {
	base = t.TempDir()
	host = imagetest.Host(t, base)
	image = filepath.Join(base, "image")
	fw := filepath.Join(image, "firmware", "acme")
	require.NoError(t, os.MkdirAll(fw, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(fw, "nic.bin"), []byte("FW"), 0o644))
	require.NoError(t, os.Symlink("../../../host", filepath.Join(fw, "hostdir")))
	require.NoError(t, os.Symlink(filepath.Join(host, "secret"), filepath.Join(fw, "secret.bin")))
	hostFW = filepath.Join(base, "lib", "firmware")
	require.NoError(t, os.MkdirAll(hostFW, 0o755))
	return base, image, hostFW, host
}

func TestCopyFirmwareCopiesOnlyTheImagesFiles(t *testing.T) {
	base, image, hostFW, _ := firmwareSetup(t)
	before := imagetest.Snapshot(t, base, "lib")
	copied, err := node.CopyImageFirmware(image, "/firmware", hostFW)
	require.NoError(t, err)
	assert.Equal(t, []string{"acme/nic.bin"}, copied, "links are neither copied nor followed")
	assert.Equal(t, []string{
		". drwxr-xr-x", "acme drwxr-xr-x", `acme/nic.bin -rw-r--r-- "FW"`,
	}, imagetest.Snapshot(t, hostFW))
	assert.Equal(t, before, imagetest.Snapshot(t, base, "lib"))

	// The old signature does the same.
	copied, err = node.CopyFirmware(filepath.Join(image, "firmware"), hostFW)
	require.NoError(t, err)
	assert.Equal(t, []string{"acme/nic.bin"}, copied)

	require.NoError(t, node.RemoveImageFirmware(image, "firmware", hostFW))
	assert.Equal(t, []string{". drwxr-xr-x", "acme drwxr-xr-x"}, imagetest.Snapshot(t, hostFW))
	assert.Equal(t, before, imagetest.Snapshot(t, base, "lib"))
}

// An image whose firmware directory is itself a link out of the image is
// refused: the host's files are not copied into the firmware directory.
func TestCopyImageFirmwareRefusesAFirmwareDirectoryOutside(t *testing.T) {
	base, image, hostFW, _ := firmwareSetup(t)
	require.NoError(t, os.Symlink("../host", filepath.Join(image, "fw-out")))
	require.NoError(t, os.Symlink(strings.Repeat("../", 40)+strings.TrimPrefix(filepath.Join(base, "host"), "/"), filepath.Join(image, "fw-clamped")))
	before := imagetest.Snapshot(t, base)
	for _, p := range []string{"/fw-out", "fw-clamped", "/firmware/acme/hostdir"} {
		_, err := node.CopyImageFirmware(image, p, hostFW)
		assert.ErrorIs(t, err, safefs.ErrEscapes, p)
		assert.ErrorContains(t, err, "copying firmware from "+filepath.Join(image, p))
		assert.ErrorIs(t, node.RemoveImageFirmware(image, p, hostFW), safefs.ErrEscapes, p)
	}
	assert.Equal(t, before, imagetest.Snapshot(t, base))
}

// Removal on unload goes through the host directory without following a
// link out of it.
func TestRemoveFirmwareStaysInTheHostDirectory(t *testing.T) {
	base, image, hostFW, _ := firmwareSetup(t)
	require.NoError(t, os.WriteFile(filepath.Join(image, "firmware", "victim"), []byte("x"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(image, "firmware", "out"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(image, "firmware", "out", "secret"), []byte("x"), 0o644))
	require.NoError(t, os.Symlink("../../host", filepath.Join(hostFW, "out")))
	before := imagetest.Snapshot(t, base)
	err := node.RemoveFirmware(filepath.Join(image, "firmware"), hostFW)
	assert.ErrorIs(t, err, safefs.ErrEscapes)
	assert.Equal(t, before, imagetest.Snapshot(t, base))

	_, err = node.CopyFirmware(filepath.Join(image, "firmware"), hostFW)
	assert.ErrorIs(t, err, safefs.ErrEscapes, "nor is anything written through it")
	secret, err := os.ReadFile(filepath.Join(base, "host", "secret"))
	require.NoError(t, err)
	assert.Equal(t, "secret", string(secret))

	assert.NoError(t, node.RemoveFirmware(filepath.Join(image, "firmware"), filepath.Join(base, "missing")), "nothing to remove")
}
