package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
	_ "time/tzdata" // TZ=Asia/Kolkata on any machine

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func layer(t *testing.T, body string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Size: int64(len(body)), ModTime: Epoch}))
	_, err := tw.Write([]byte(body))
	require.NoError(t, err)
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func digest(t *testing.T, s Spec) v1.Hash {
	t.Helper()
	img, err := Image(s)
	require.NoError(t, err)
	d, err := img.Digest()
	require.NoError(t, err)
	return d
}

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// TestImageIgnoresTheTimeZone builds the same specs in processes with
// different time zones: the digests are the same.
func TestImageIgnoresTheTimeZone(t *testing.T) {
	if os.Getenv("KMMKIT_OCIIMAGE_DIGESTS") == "1" {
		s := Spec{Layer: layer(t, "a"), Platform: amd64}
		at := s
		at.Created = time.Unix(1700000000, 0) // in the local zone
		fmt.Printf("%s %s\n", digest(t, s), digest(t, at))
		return
	}
	digests := map[string]string{}
	for _, tz := range []string{"UTC", "Asia/Kolkata", "America/Los_Angeles"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestImageIgnoresTheTimeZone$")
		cmd.Env = append(os.Environ(), "KMMKIT_OCIIMAGE_DIGESTS=1", "TZ="+tz)
		out, err := cmd.Output()
		require.NoError(t, err, "TZ=%s", tz)
		digests[tz] = string(bytes.SplitN(out, []byte("\n"), 2)[0])
	}
	assert.Equal(t, digests["UTC"], digests["Asia/Kolkata"])
	assert.Equal(t, digests["UTC"], digests["America/Los_Angeles"])
}

// TestImageIsReproducible: the same spec gives the same digest; the
// layer, the platform, the time and the config each change it.
func TestImageIsReproducible(t *testing.T) {
	s := Spec{Layer: layer(t, "a"), Platform: amd64, History: v1.History{CreatedBy: "test"}}
	want := digest(t, s)
	assert.Equal(t, want, digest(t, s))
	withTime := s
	withTime.Created = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	at := digest(t, withTime)
	assert.NotEqual(t, want, at)
	other := s
	other.Layer = layer(t, "b")
	assert.NotEqual(t, want, digest(t, other))
	other = s
	other.Platform = v1.Platform{OS: "linux", Architecture: "arm64"}
	assert.NotEqual(t, want, digest(t, other))
	other = s
	other.Config = func(c *v1.Config) { c.Entrypoint = []string{"/x"} }
	assert.NotEqual(t, want, digest(t, other))

	img, err := Image(s)
	require.NoError(t, err)
	mt, err := img.MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCIManifestSchema1, mt)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "1970-01-01 00:00:00 +0000 UTC", cfg.Created.Time.String())
	require.Len(t, cfg.History, 1)
	assert.Equal(t, "test", cfg.History[0].CreatedBy)
	assert.True(t, cfg.History[0].Created.Equal(Epoch))
}
