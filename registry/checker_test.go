package registry

import (
	"context"
	"encoding/base64"
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

// fastRetry keeps retry tests quick.
var fastRetry = RetryPolicy{Attempts: 4, Base: 10 * time.Millisecond, Max: 2 * time.Second}

func newChecker(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := NewClient(append([]Option{WithRetryPolicy(fastRetry)}, opts...)...)
	require.NoError(t, err)
	return c
}

func TestCheckExistsAndMissing(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	docker := reg.push(t, "kmm/docker:v1", false)
	oci := reg.push(t, "kmm/oci:v1", true)
	c := newChecker(t, WithCABundle(reg.caPEM()))
	ctx := context.Background()

	for img, want := range map[string]string{"kmm/docker:v1": docker, "kmm/oci:v1": oci, "kmm/oci@" + oci: oci} {
		res, err := c.Check(ctx, Request{Image: reg.host + "/" + img})
		require.NoError(t, err, img)
		assert.True(t, res.Exists, img)
		assert.Equal(t, want, res.Digest, img)
	}
	for img, why := range map[string]string{"kmm/docker:v2": "manifest unknown", "kmm/nothing:v1": "repository unknown"} {
		res, err := c.Check(ctx, Request{Image: reg.host + "/" + img})
		require.NoError(t, err, "does not exist is an answer, not an error")
		assert.False(t, res.Exists, img)
		assert.Equal(t, why, res.Missing)
	}
	_, err := c.Check(ctx, Request{Image: "UPPER/case:x"})
	assert.Equal(t, reason.InvalidReference, reason.Of(err))
}

func TestCheckIndexSelectsNodePlatform(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	idx, digests := reg.pushIndex(t, "kmm/multi:v1", amd64, arm64)
	c := newChecker(t, WithCABundle(reg.caPEM()))
	img := reg.host + "/kmm/multi:v1"

	res, err := c.Check(context.Background(), Request{Image: img, Platform: &amd64})
	require.NoError(t, err)
	assert.True(t, res.Exists)
	assert.Equal(t, digests["linux/amd64"], res.Digest)
	assert.Equal(t, idx, res.IndexDigest)

	res, err = c.Check(context.Background(), Request{Image: img, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}})
	require.NoError(t, err)
	assert.Equal(t, digests["linux/arm64/v8"], res.Digest)

	res, err = c.Check(context.Background(), Request{Image: img, Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}})
	require.NoError(t, err)
	assert.False(t, res.Exists)
	assert.Equal(t, "the index has no manifest for linux/s390x", res.Missing)

	res, err = c.Check(context.Background(), Request{Image: img})
	require.NoError(t, err)
	assert.Equal(t, idx, res.Digest, "no platform: the index itself")
}

func basicKeychain(t *testing.T, host, user, pass string) AuthInfo {
	t.Helper()
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	kc, err := DockerConfigKeychain([]byte(cfg))
	require.NoError(t, err)
	return AuthInfo{Keychain: kc, Secrets: []string{"kmm-test/pull"}}
}

func TestCheckAuth(t *testing.T) {
	reg := newTestRegistry(t, true, "alice", "s3cret")
	digest := reg.push(t, "kmm/private:v1", false)
	c := newChecker(t, WithCABundle(reg.caPEM()))
	img := reg.host + "/kmm/private:v1"
	ctx := context.Background()

	res, err := c.Check(ctx, Request{Image: img, Auth: basicKeychain(t, reg.host, "alice", "s3cret")})
	require.NoError(t, err)
	assert.Equal(t, digest, res.Digest)

	_, err = c.Check(ctx, Request{Image: img})
	require.True(t, IsUnauthorized(err), "%v", err)
	assert.Contains(t, err.Error(), "no pull secret was given: set imageRepoSecret")

	_, err = c.Check(ctx, Request{Image: img, Auth: basicKeychain(t, reg.host, "alice", "wrong")})
	require.True(t, IsUnauthorized(err), "%v", err)
	assert.Contains(t, err.Error(), "used pull secret kmm-test/pull")
}

func TestCheckTLS(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	reg.push(t, "kmm/tls:v1", false)
	img := reg.host + "/kmm/tls:v1"
	ctx := context.Background()

	_, err := newChecker(t).Check(ctx, Request{Image: img})
	require.True(t, IsTLS(err), "an unknown CA is a TLS error: %v", err)

	res, err := newChecker(t).Check(ctx, Request{Image: img, TLS: v1beta1.TLSOptions{InsecureSkipTLSVerify: true}})
	require.NoError(t, err)
	assert.True(t, res.Exists)

	plain := newTestRegistry(t, false, "", "")
	plain.push(t, "kmm/plain:v1", false)
	_, err = newChecker(t).Check(ctx, Request{Image: plain.host + "/kmm/plain:v1"})
	require.True(t, IsTLS(err), "plain HTTP without insecure is refused: %v", err)
	res, err = newChecker(t).Check(ctx, Request{Image: plain.host + "/kmm/plain:v1", TLS: v1beta1.TLSOptions{Insecure: true}})
	require.NoError(t, err)
	assert.True(t, res.Exists)

	_, err = NewClient(WithCABundle([]byte("not pem")))
	assert.ErrorContains(t, err, "no PEM certificate")
}

func TestCheckCacheAndVerify(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	reg.push(t, "kmm/cached:v1", false)
	reg.manifests.Store(0) // the push made its own manifest requests
	reg.blobs.Store(0)
	clock := clocktesting.NewFakePassiveClock(time.Now())
	advance := func(d time.Duration) { clock.SetTime(clock.Now().Add(d)) }
	c := newChecker(t, WithCABundle(reg.caPEM()), WithTTL(time.Minute, 10*time.Second), WithClock(clock))
	ctx := context.Background()
	hit := Request{Image: reg.host + "/kmm/cached:v1"}
	miss := Request{Image: reg.host + "/kmm/cached:v2"}

	for i := range 3 {
		res, err := c.Check(ctx, hit)
		require.NoError(t, err)
		assert.Equal(t, i > 0, res.Cached)
		_, err = c.Check(ctx, miss)
		require.NoError(t, err)
	}
	assert.EqualValues(t, 2, reg.manifests.Load(), "one request per image")
	assert.EqualValues(t, 2, reg.blobs.Load(), "config and layer of the image that exists, once")

	advance(20 * time.Second) // past the missing TTL, not the exists TTL
	res, err := c.Check(ctx, miss)
	require.NoError(t, err)
	assert.False(t, res.Cached)
	res, err = c.Check(ctx, hit)
	require.NoError(t, err)
	assert.True(t, res.Cached)

	res, err = c.Verify(ctx, hit)
	require.NoError(t, err)
	assert.False(t, res.Cached, "Verify always asks")
	assert.EqualValues(t, 4, reg.manifests.Load(), "Verify: a HEAD of the known image")
	assert.EqualValues(t, 4, reg.blobs.Load(), "Verify asks for the blobs again")

	c.Invalidate(hit.Image)
	res, err = c.Check(ctx, hit)
	require.NoError(t, err)
	assert.False(t, res.Cached)
}

func TestCheckCollapsesConcurrentChecks(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	reg.push(t, "kmm/hot:v1", false)
	reg.manifests.Store(0)
	reg.inject(fault{stall: 200 * time.Millisecond}) // the ping: keep the first call busy
	c := newChecker(t, WithCABundle(reg.caPEM()))
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Check(context.Background(), Request{Image: reg.host + "/kmm/hot:v1"})
			if err == nil && !res.Exists {
				err = fmt.Errorf("missing")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.EqualValues(t, 1, reg.manifests.Load())
}

func TestRetries(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	reg.push(t, "kmm/flaky:v1", false)
	img := reg.host + "/kmm/flaky:v1"
	ctx := context.Background()

	t.Run("5xx burst", func(t *testing.T) {
		reg.inject(fault{status: 503}, fault{status: 502}, fault{status: 500})
		res, err := newChecker(t, WithCABundle(reg.caPEM())).Check(ctx, Request{Image: img})
		require.NoError(t, err)
		assert.True(t, res.Exists)
	})
	t.Run("429 with Retry-After", func(t *testing.T) {
		reg.inject(fault{status: 429, retryAfter: "1"})
		start := time.Now()
		res, err := newChecker(t, WithCABundle(reg.caPEM())).Check(ctx, Request{Image: img})
		require.NoError(t, err)
		assert.True(t, res.Exists)
		assert.GreaterOrEqual(t, time.Since(start), time.Second, "Retry-After was honoured")
	})
	t.Run("connection reset", func(t *testing.T) {
		reg.inject(fault{reset: true}, fault{reset: true})
		res, err := newChecker(t, WithCABundle(reg.caPEM())).Check(ctx, Request{Image: img})
		require.NoError(t, err)
		assert.True(t, res.Exists)
	})
	t.Run("stall", func(t *testing.T) {
		base := defaultBaseTransport()
		base.ResponseHeaderTimeout = 100 * time.Millisecond
		reg.inject(fault{stall: 400 * time.Millisecond})
		res, err := newChecker(t, WithCABundle(reg.caPEM()), WithBaseTransport(base)).Check(ctx, Request{Image: img})
		require.NoError(t, err)
		assert.True(t, res.Exists)
	})
	t.Run("gives up in bounded time", func(t *testing.T) {
		for range 20 {
			reg.inject(fault{status: 503})
		}
		start := time.Now()
		_, err := newChecker(t, WithCABundle(reg.caPEM())).Check(ctx, Request{Image: img})
		require.True(t, IsUnavailable(err), "%v", err)
		assert.Less(t, time.Since(start), 5*time.Second)
		reg.mu.Lock()
		reg.faults = nil
		reg.mu.Unlock()
	})
	t.Run("definite answers are not retried", func(t *testing.T) {
		c := newChecker(t, WithCABundle(reg.caPEM()))
		_, err := c.Check(ctx, Request{Image: img}) // warm the ping
		require.NoError(t, err)
		before := reg.manifests.Load()
		res, err := c.Check(ctx, Request{Image: reg.host + "/kmm/flaky:missing"})
		require.NoError(t, err)
		assert.False(t, res.Exists)
		assert.EqualValues(t, 1, reg.manifests.Load()-before)
	})
	t.Run("unreachable", func(t *testing.T) {
		_, err := newChecker(t).Check(ctx, Request{Image: "127.0.0.1:1/kmm/none:v1"})
		require.True(t, IsUnavailable(err), "%v", err)
	})
}
