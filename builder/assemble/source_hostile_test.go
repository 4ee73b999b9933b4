package assemble

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/imagetest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// TestImageSourceDoesNotPackHostFiles: a builder stage whose output
// directory holds a hard link, through an escaping symbolic link, to a
// host file (a 0600 secret named like a module) is refused: the build
// fails naming the entry, nothing is pushed, and the host is unchanged.
func TestImageSourceDoesNotPackHostFiles(t *testing.T) {
	ctx := context.Background()
	host, pushes := countingRegistry(t)
	client, err := registry.NewClient()
	require.NoError(t, err)
	tls := v1beta1.TLSOptions{Insecure: true}
	base := t.TempDir()
	hostDir := imagetest.Host(t, base)
	require.NoError(t, os.WriteFile(filepath.Join(hostDir, "secret.ko"), []byte("host secret"), 0o600))
	// ImageSource stages below os.TempDir()/kmmkit-source*/: two levels
	// above the staging directory, then the way to the host directory.
	rest, err := filepath.Rel(os.TempDir(), hostDir)
	require.NoError(t, err)
	good := synthetic()[1]

	dir := "usr/src/out/lib/modules/" + kver + "/extra"
	// The error names the escaping link, or (deferred: the link still
	// led inside when made) the hard link going through it.
	cases := map[string]func() ([]imagetest.Entry, string, string){
		"chained": func() ([]imagetest.Entry, string, string) {
			e, l := imagetest.ChainedEscape(dir, 2, rest, false)
			return e, l, dir
		},
		"chained deferred": func() ([]imagetest.Entry, string, string) {
			e, l := imagetest.ChainedEscape(dir, 2, rest, true)
			return e, l, dir
		},
		"clamped": func() ([]imagetest.Entry, string, string) {
			e, l := imagetest.ClampedEscape(hostDir)
			return []imagetest.Entry{e}, l, strings.Trim(hostDir, "/")
		},
	}
	n := 0
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			before := imagetest.Snapshot(t, base)
			links, link, dir := mk()
			stolen := dir + "/stolen.ko"
			stage := imagetest.Image(t,
				imagetest.Layer(t, append(links, imagetest.File(dir+"/kmm_ci_a.ko", string(good.Data)))...),
				imagetest.Layer(t, imagetest.Hardlink(stolen, link+"/secret.ko")))
			n++
			stageRef := fmt.Sprintf("%s/acme/nic-builder%d:%s", host, n, kver)
			_, err := client.Push(ctx, registry.Request{Image: stageRef, TLS: tls}, stage)
			require.NoError(t, err)
			pushed := pushes.Load()

			src := ImageSource(client, registry.Request{Image: stageRef, TLS: tls}, "/"+dir)
			req := buildRequest(t, fmt.Sprintf("%s/acme/nic%d:%s", host, n, kver))
			b, err := New(client, src)
			require.NoError(t, err)
			st, err := b.Sync(ctx, req)
			require.Error(t, err)
			assert.Equal(t, reason.UnsafeImage, st.Reason)
			assert.True(t, st.Final)
			assert.ErrorIs(t, err, registry.ErrUnsafeEntry)
			assert.Equal(t, reason.UnsafeImage, reason.Of(err), "%v", err)
			named := link
			if name == "chained deferred" {
				named = stolen
			}
			assert.Contains(t, err.Error(), fmt.Sprintf("unsafe image entry %q", named))
			assert.Equal(t, pushed, pushes.Load(), "nothing pushed")
			res, err := client.Verify(ctx, registry.Request{Image: req.Image, TLS: tls})
			require.NoError(t, err)
			assert.False(t, res.Exists)
			assert.Equal(t, before, imagetest.Snapshot(t, base), "the host is unchanged")
		})
	}
}
