package nodecmd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/internal/imagetest"
)

// TestWorkerLoadHostileImage runs "kmm worker load --config" against
// images that try to write, delete or steal host files through escaping
// links, or whose layer the registry tampered with: each run fails before
// anything is loaded, says why, and leaves everything outside the pull
// directory as it was (and nothing in it).
func TestWorkerLoadHostileImage(t *testing.T) {
	const kernel = "6.1.0-1"
	mods := "opt/lib/modules/" + kernel
	reg := imagetest.NewRegistry(t)
	cases := map[string]struct {
		image func(t *testing.T, host string) (v1.Image, string)
		want  []string
	}{
		"write through chained links": {
			image: func(t *testing.T, _ string) (v1.Image, string) {
				e, l := imagetest.ChainedEscape(mods, 2, "host", true)
				return imagetest.Image(t, imagetest.Layer(t, e...), imagetest.Layer(t, imagetest.File(l+"/victim", "pwned"))), ""
			},
			want: []string{"layer 1 (sha256:", "unsafe image entry", "/victim", "leads outside the extraction directory"},
		},
		"whiteout through chained links": {
			image: func(t *testing.T, _ string) (v1.Image, string) {
				e, l := imagetest.ChainedEscape(mods, 2, "host", true)
				return imagetest.Image(t, imagetest.Layer(t, append(e, imagetest.Opaque(l+"/sub"), imagetest.Whiteout(l, "victim"))...)), ""
			},
			want: []string{"unsafe image entry", "/sub/.wh..wh..opq"},
		},
		"firmware hard link through a clamped link": {
			image: func(t *testing.T, host string) (v1.Image, string) {
				e, l := imagetest.ClampedEscape(host)
				fw := strings.Trim(host, "/")
				return imagetest.Image(t,
					imagetest.Layer(t, imagetest.File(mods+"/a.ko", "A"), e),
					imagetest.Layer(t, imagetest.Hardlink(fw+"/stolen.bin", l+"/secret"))), host
			},
			want: []string{"unsafe image entry", "/l", "leads outside the extraction directory"},
		},
		"tampered layer": {
			image: func(t *testing.T, _ string) (v1.Image, string) {
				bad := imagetest.PlainLayer(imagetest.Tar(imagetest.File(mods+"/a.ko", strings.Repeat("A", 2048))))
				d, err := bad.Digest()
				require.NoError(t, err)
				reg.Tamper(d, imagetest.FlipByte(1000))
				return imagetest.Image(t, bad), ""
			},
			want: []string{"layer 0 (sha256:", "corrupt layer: the blob's digest is sha256:"},
		},
	}
	n := 0
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			host := imagetest.Host(t, base)
			img, firmware := tc.image(t, host)
			n++
			tag, _ := reg.Push(t, fmt.Sprintf("acme/hostile%d:v1", n), img)
			pull := filepath.Join(base, "pull")
			fwHost := filepath.Join(base, "lib", "firmware")
			require.NoError(t, os.MkdirAll(fwHost, 0o755))
			cfg := filepath.Join(base, "config.yaml")
			require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(
				"kernelVersion: %s\ncontainerImage: %s\ninsecurePull: true\nmodprobe:\n  moduleName: a\n  firmwarePath: %q\n",
				kernel, tag, firmware)), 0o644))
			before := imagetest.Snapshot(t, base, "pull")

			code, _, stderr := runWorker(t, Env{}, "load", "--config", cfg, "--pull-dir", pull, "--firmware-host-path", fwHost)
			assert.Equal(t, cli.ExitError, code)
			assert.Contains(t, stderr, "kmm worker load: extract "+tag)
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
			assert.Equal(t, before, imagetest.Snapshot(t, base, "pull"), "nothing outside the pull directory changed")
			left, _ := os.ReadDir(pull)
			assert.Empty(t, left, "nothing extracted, no temporary directory")
		})
	}
}
