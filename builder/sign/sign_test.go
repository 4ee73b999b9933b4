package sign_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

const kver = "6.1.0-56-amd64"

func keyPair(t *testing.T) (keyPEM, certPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kmmkit test signing key"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func modules() []assemble.File {
	return []assemble.File{
		{Path: "extra/kmm_ci_b.ko", Data: elftest.Module{Exports: []elftest.Export{{Name: "b_fn"}}}.Bytes()},
		{Path: "extra/kmm_ci_a.ko", Data: elftest.Module{Needs: []elftest.Need{{Name: "b_fn"}}}.Bytes()},
	}
}

// flat reads the image's merged file system.
func flat(t *testing.T, c *registry.Client, req registry.Request) map[string][]byte {
	t.Helper()
	img, _, err := c.Pull(context.Background(), req)
	require.NoError(t, err)
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		if h.Typeflag == tar.TypeReg {
			out["/"+h.Name], err = io.ReadAll(tr)
			require.NoError(t, err)
		}
	}
}

// runSign pushes an unsigned image to the intermediate tag, signs it to
// the final tag, and checks the final tag holds exactly the modules
// sign-file would produce, and the depmod files untouched.
func runSign(t *testing.T, c *registry.Client, reg registry.Request) {
	ctx := context.Background()
	final := reg
	final.Image = reg.Image + "/nic:" + kver
	unsigned := final
	var err error
	unsigned.Image, err = sign.IntermediateTag(final.Image)
	require.NoError(t, err)
	img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kver, Modules: modules()})
	require.NoError(t, err)
	_, err = c.Push(ctx, unsigned, img)
	require.NoError(t, err)

	key, cert := keyPair(t)
	s, err := sign.New(c, sign.WithLogger(testLogger(t)))
	require.NoError(t, err)
	res, err := s.Sign(ctx, sign.Request{From: unsigned, To: final, Key: key, Cert: cert,
		FilesToSign: []string{"/opt/lib/modules/" + kver + "/extra/*.ko"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"/opt/lib/modules/" + kver + "/extra/kmm_ci_a.ko", "/opt/lib/modules/" + kver + "/extra/kmm_ci_b.ko"}, res.Signed)
	check, err := c.Verify(ctx, final)
	require.NoError(t, err)
	assert.Equal(t, res.Digest, check.Digest)

	signer, err := signfile.ParseSigner(crypto.SHA256, key, cert)
	require.NoError(t, err)
	before, after := flat(t, c, unsigned), flat(t, c, final)
	for _, m := range modules() {
		p := "/opt/lib/modules/" + kver + "/" + m.Path
		want, err := signer.Sign(m.Data)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, after[p]), "%s is signed as sign-file signs it", p)
		assert.True(t, bytes.HasSuffix(after[p], []byte("~Module signature appended~\n")))
		assert.Equal(t, m.Data, before[p], "the intermediate image stays unsigned")
	}
	dep := "/opt/lib/modules/" + kver + "/modules.dep"
	assert.Equal(t, before[dep], after[dep])

	// Errors name what is wrong, and nothing is pushed.
	_, err = s.Sign(ctx, sign.Request{From: unsigned, To: final, Key: key, Cert: cert, FilesToSign: []string{"/opt/lib/modules/" + kver + "/nope.ko"}})
	assert.ErrorContains(t, err, `filesToSign entry "/opt/lib/modules/`+kver+`/nope.ko" matches no file`)
	_, err = s.Sign(ctx, sign.Request{From: final, To: final, Key: key, Cert: cert, FilesToSign: []string{"/x"}})
	assert.ErrorContains(t, err, "unsigned modules must not be published at the final tag")
	_, err = s.Sign(ctx, sign.Request{From: unsigned, To: final, Key: []byte("junk"), Cert: cert, FilesToSign: []string{"/x"}})
	assert.ErrorContains(t, err, "private key")
}

func testLogger(t *testing.T) logr.Logger { return testr.New(t) }

func TestSignInProcessRegistry(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New())
	t.Cleanup(srv.Close)
	c, err := registry.NewClient()
	require.NoError(t, err)
	runSign(t, c, registry.Request{Image: strings.TrimPrefix(srv.URL, "http://") + "/acme", TLS: v1beta1.TLSOptions{Insecure: true}})
}

// TestSignRealRegistry signs through the TLS docker-registry with
// htpasswd authentication.
func TestSignRealRegistry(t *testing.T) {
	r := testenv.Registry(t)
	ca, err := os.ReadFile(r.CAFile)
	require.NoError(t, err)
	c, err := registry.NewClient(registry.WithCABundle(ca))
	require.NoError(t, err)
	cfg := []byte(`{"auths":{"` + r.TLS + `":{"username":"` + r.User + `","password":"` + r.Password + `"}}}`)
	kc, err := registry.DockerConfigKeychain(cfg)
	require.NoError(t, err)
	runSign(t, c, registry.Request{Image: r.TLS + "/sign-test", Auth: registry.AuthInfo{Keychain: kc}})
}

func TestIntermediateTag(t *testing.T) {
	for image, want := range map[string]string{
		"registry.example.com:5000/acme/nic:6.1.0-56-amd64":                                        "registry.example.com:5000/acme/nic:6.1.0-56-amd64-kmmkit-unsigned",
		"quay.io/acme/nic@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": "quay.io/acme/nic:0123456789abcdef-kmmkit-unsigned",
	} {
		got, err := sign.IntermediateTag(image)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := sign.IntermediateTag("Not A Ref")
	assert.ErrorContains(t, err, `image "Not A Ref"`)
}

// TestNewNeedsAClient: New names what is missing.
func TestNewNeedsAClient(t *testing.T) {
	_, err := sign.New(nil)
	assert.EqualError(t, err, "sign: New needs a registry client")
}
