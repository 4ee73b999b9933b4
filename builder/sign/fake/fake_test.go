package fake_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/builder/sign/fake"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
)

var _ kmm.ImageSigner = fake.New()

// A signer for a unit test: signed images appear in a fake registry, and
// signing into one image fails.
func Example() {
	reg := registryfake.New()
	signer := fake.New()
	signer.OnSign(func(req sign.Request, res sign.Result) { reg.SetExists(req.To.Image, res.Digest) })
	signer.Fail("quay.io/acme/nic:6.8.0-1", errors.New("sign: filesToSign entry /opt/lib/modules/6.8.0-1/nic.ko matches no file"))

	var s kmm.ImageSigner = signer // what your code under test takes
	for _, img := range []string{"quay.io/acme/nic:6.1.0-56-amd64", "quay.io/acme/nic:6.8.0-1"} {
		_, err := s.Sign(context.Background(), sign.Request{
			From:        registry.Request{Image: img + "-unsigned"},
			To:          registry.Request{Image: img},
			FilesToSign: []string{"/opt/lib/modules/x/nic.ko"},
		})
		res, _ := reg.Check(context.Background(), registry.Request{Image: img})
		fmt.Println(img, "exists:", res.Exists, "error:", err)
	}
	fmt.Println(len(signer.Requests()), "requests")
	// Output:
	// quay.io/acme/nic:6.1.0-56-amd64 exists: true error: <nil>
	// quay.io/acme/nic:6.8.0-1 exists: false error: sign: filesToSign entry /opt/lib/modules/6.8.0-1/nic.ko matches no file
	// 2 requests
}

func TestSigner(t *testing.T) {
	ctx := context.Background()
	s := fake.New()
	var hooked []string
	s.OnSign(func(req sign.Request, res sign.Result) { hooked = append(hooked, req.To.Image+"@"+res.Digest) })
	req := sign.Request{From: registry.Request{Image: "r/nic:a-unsigned"}, To: registry.Request{Image: "r/nic:a"},
		FilesToSign: []string{"/opt/b.ko", "/opt/a.ko"}}

	res, err := s.Sign(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, []string{"/opt/a.ko", "/opt/b.ko"}, res.Signed)
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, res.Digest)
	again, err := s.Sign(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, res.Digest, again.Digest, "the digest is stable")
	assert.Equal(t, []string{"r/nic:a@" + res.Digest, "r/nic:a@" + res.Digest}, hooked)

	refused := map[string]sign.Request{
		"filesToSign is empty": {From: req.From, To: req.To},
		"no image to sign":     {To: req.To, FilesToSign: req.FilesToSign},
		"are both r/nic:a":     {From: req.To, To: req.To, FilesToSign: req.FilesToSign},
	}
	for want, r := range refused {
		_, err := s.Sign(ctx, r)
		assert.ErrorContains(t, err, want)
	}

	denied := &registry.Error{Reason: registry.ReasonUnauthorized, Image: "r/nic:a"}
	s.Fail("r/nic:a", denied)
	_, err = s.Sign(ctx, req)
	assert.Equal(t, reason.Unauthorized, reason.Of(err))
	s.Fail("r/nic:a", nil)
	_, err = s.Sign(ctx, req)
	assert.NoError(t, err)

	assert.Len(t, s.Requests(), 7, "refused and failed requests are recorded too")
	assert.Len(t, hooked, 3, "the hook runs only on success")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.Sign(cancelled, req)
	assert.ErrorIs(t, err, context.Canceled)
}
