package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// realPush writes img to a docker-registry server.
func realPush(t *testing.T, regs testenv.Registries, ref string, img v1.Image, idx v1.ImageIndex) string {
	t.Helper()
	var opts []remote.Option
	var nameOpts []name.Option
	if ref[:len(regs.TLS)] == regs.TLS {
		pem, err := os.ReadFile(regs.CAFile)
		require.NoError(t, err)
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(pem))
		opts = append(opts, remote.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}),
			remote.WithAuth(&authn.Basic{Username: regs.User, Password: regs.Password}))
	} else {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nameOpts...)
	require.NoError(t, err)
	var d v1.Hash
	if idx != nil {
		require.NoError(t, remote.WriteIndex(r, idx, opts...))
		d, err = idx.Digest()
	} else {
		require.NoError(t, remote.Write(r, img, opts...))
		d, err = img.Digest()
	}
	require.NoError(t, err)
	return d.String()
}

func randomImage(t *testing.T, oci bool) v1.Image {
	t.Helper()
	img, err := random.Image(512, 2)
	require.NoError(t, err)
	if oci {
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	return img
}

// TestRealRegistryPlain checks Docker v2 and OCI images, a multi-arch
// index, and missing tags and repositories on a plain-HTTP
// docker-registry.
func TestRealRegistryPlain(t *testing.T) {
	regs := testenv.Registry(t)
	repo := fmt.Sprintf("%s/kmmkit-%d", regs.Plain, rand.Uint32())
	docker := realPush(t, regs, repo+"/mod:docker", randomImage(t, false), nil)
	oci := realPush(t, regs, repo+"/mod:oci", randomImage(t, true), nil)
	amd, arm := randomImage(t, true), randomImage(t, true)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	realPush(t, regs, repo+"/mod:multi", nil, idx)
	armDigest, err := arm.Digest()
	require.NoError(t, err)

	c, err := NewClient()
	require.NoError(t, err)
	ctx := context.Background()
	insecure := v1beta1.TLSOptions{Insecure: true}
	for tag, want := range map[string]string{"docker": docker, "oci": oci} {
		res, err := c.Check(ctx, Request{Image: repo + "/mod:" + tag, TLS: insecure})
		require.NoError(t, err)
		assert.True(t, res.Exists, tag)
		assert.Equal(t, want, res.Digest, tag)
	}
	res, err := c.Check(ctx, Request{Image: repo + "/mod:multi", TLS: insecure, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}})
	require.NoError(t, err)
	assert.Equal(t, armDigest.String(), res.Digest)
	res, err = c.Check(ctx, Request{Image: repo + "/mod:multi", TLS: insecure, Platform: &v1.Platform{OS: "linux", Architecture: "ppc64le"}})
	require.NoError(t, err)
	assert.False(t, res.Exists)
	for _, missing := range []string{repo + "/mod:nope", repo + "/no-such-repo:v1"} {
		res, err := c.Check(ctx, Request{Image: missing, TLS: insecure})
		require.NoError(t, err, missing)
		assert.False(t, res.Exists, missing)
	}
	_, err = c.Check(ctx, Request{Image: repo + "/mod:docker"})
	assert.True(t, IsTLS(err), "without insecure, plain HTTP is refused: %v", err)
}

// TestRealRegistryExtract extracts a FROM-scratch style kmod image, with
// a whiteout in its second layer, from the TLS registry.
func TestRealRegistryExtract(t *testing.T) {
	regs := testenv.Registry(t)
	mods := "opt/lib/modules/6.1.0-56-amd64"
	img := imageOf(t,
		layer(t, file(mods+"/extra/kmm_ci_a.ko", "A"), file(mods+"/extra/stale.ko", "S"), file("firmware/ci.bin", "FW")),
		layer(t, file(mods+"/extra/.wh.stale.ko", ""), file(mods+"/modules.dep", "extra/kmm_ci_a.ko:\n")))
	ref := fmt.Sprintf("%s/kmmkit-x-%d/kmod:6.1.0-56-amd64", regs.TLS, rand.Uint32())
	digest := realPush(t, regs, ref, img, nil)
	ca, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	c, err := NewClient(WithCABundle(ca))
	require.NoError(t, err)
	auth := basicKeychain(t, regs.TLS, regs.User, regs.Password)
	dest := t.TempDir() + "/kmod"
	res, err := c.Extract(context.Background(), Request{Image: ref, Auth: auth}, dest, ExtractOptions{KernelVersion: "6.1.0-56-amd64", FirmwarePath: "/firmware"})
	require.NoError(t, err)
	assert.Equal(t, digest, res.Digest)
	assert.Equal(t, []string{"firmware/ci.bin: FW", mods + "/extra/kmm_ci_a.ko: A", mods + "/modules.dep: extra/kmm_ci_a.ko:\n"}, listTree(t, dest))
}
