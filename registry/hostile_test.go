package registry

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/faultproxy"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

// hostileClient is a Client and a Request for img through the proxy, with
// the idle timeout the cases expect.
func hostileClient(t *testing.T, p *faultproxy.Proxy, img faultproxy.Image, opts ...Option) (*Client, Request) {
	t.Helper()
	opts = append([]Option{WithIdleTimeout(faultproxy.IdleTimeout)}, opts...)
	req := Request{Image: img.Ref}
	if p.TLS {
		opts = append(opts, WithCABundle(p.CAPEM()))
		kc, err := DockerConfigKeychain(p.DockerConfig())
		require.NoError(t, err)
		req.Auth = AuthInfo{Keychain: kc, Secrets: []string{"kmm-test/pull"}}
	} else {
		req.TLS = v1beta1.TLSOptions{Insecure: true}
	}
	c, err := NewClient(opts...)
	require.NoError(t, err)
	return c, req
}

// TestHostileRegistries runs faultproxy's cases against the real
// docker-registry: each ends with the reason and message the user must
// read, in bounded time, requests and memory.
func TestHostileRegistries(t *testing.T) {
	for _, tc := range faultproxy.Cases() {
		t.Run(tc.Name, func(t *testing.T) {
			p, img := tc.Arrange(t)
			c, req := hostileClient(t, p, img)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			res, err := c.Check(context.Background(), req)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)

			var msg string
			if tc.Reason == reason.ImageNotFound {
				require.NoError(t, err, "a definite answer is not an error")
				assert.False(t, res.Exists)
				msg = res.Missing
			} else {
				require.Error(t, err, "exists=%v", res.Exists)
				assert.Equal(t, tc.Reason, reason.Of(err), "%v", err)
				msg = err.Error()
			}
			for _, s := range tc.Text {
				assert.Contains(t, msg, s)
			}
			for _, s := range append(tc.Hidden, p.Password()) {
				assert.NotContains(t, msg, s)
			}
			assert.Less(t, elapsed, tc.MaxTime)
			assert.LessOrEqual(t, p.Requests(), tc.MaxRequests, "requests for one check")
			assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(32<<20), "bytes allocated by one check")
			t.Logf("%s: %v in %s, %d requests, %.1f MiB allocated", tc.Name, msg, elapsed.Round(time.Millisecond),
				p.Requests(), float64(after.TotalAlloc-before.TotalAlloc)/(1<<20))
		})
	}
}

// TestHostileProxyPassesAnHonestRegistry is the proxy without faults: the
// image exists, with one manifest GET and a HEAD per blob.
func TestHostileProxyPassesAnHonestRegistry(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		p := faultproxy.Start(t, useTLS)
		img := p.Push(t)
		c, req := hostileClient(t, p, img)
		p.Reset()
		res, err := c.Check(context.Background(), req)
		require.NoError(t, err)
		assert.True(t, res.Exists)
		assert.Equal(t, img.Digest.String(), res.Digest)
		assert.LessOrEqual(t, p.Requests(), int64(5), "ping (twice with a challenge), the manifest, two blobs")
	}
}

// TestHostileHEADPath: once an image is known, Verify asks with HEAD; an
// HTML page with a digest header is not taken for the manifest.
func TestHostileHEADPath(t *testing.T) {
	p := faultproxy.Start(t, false)
	img := p.Push(t)
	c, req := hostileClient(t, p, img)
	res, err := c.Check(context.Background(), req)
	require.NoError(t, err)
	require.True(t, res.Exists)

	p.Add(faultproxy.Rule{Match: faultproxy.Manifests(http.MethodHead), Do: faultproxy.Status(http.StatusOK,
		map[string]string{"Content-Type": "text/html", "Docker-Content-Digest": img.Digest.String()}, "<html></html>")})
	_, err = c.Verify(context.Background(), req)
	require.Error(t, err)
	assert.Equal(t, reason.RegistryError, reason.Of(err))
	assert.Contains(t, err.Error(), "HEAD answered 200 with Content-Type text/html, which is not an image manifest")

	// A deleted blob is noticed by Verify, though the manifest is cached.
	p.Reset()
	p.DeleteBlob(t, img, img.Config)
	res, err = c.Verify(context.Background(), req)
	require.NoError(t, err)
	assert.False(t, res.Exists)
	assert.Contains(t, res.Missing, "config "+img.Config.String())
}

// TestHostileExtractRedirectHidesSignature: a layer served through a
// storage redirect whose backend echoes the signed URL; the error names
// neither the signature nor the credentials.
func TestHostileExtractRedirectHidesSignature(t *testing.T) {
	p := faultproxy.Start(t, true)
	img := p.Push(t)
	c, req := hostileClient(t, p, img)
	signed, signature := faultproxy.Storage(t, true)
	p.Add(faultproxy.Rule{Match: faultproxy.Blobs(http.MethodGet), Do: faultproxy.Redirect(signed)})
	_, err := c.Extract(context.Background(), req, filepath.Join(t.TempDir(), "x"), ExtractOptions{KernelVersion: "6.1.0-56-amd64"})
	require.Error(t, err)
	for _, s := range []string{signature, "AKIAEXAMPLE", "SignatureDoesNotMatch", p.Password()} {
		assert.NotContains(t, err.Error(), s)
	}
	assert.Contains(t, err.Error(), "403 Forbidden")
}

// TestHostileStalledLayer: a layer body that stalls fails the extraction
// after the idle timeout, as RegistryUnavailable.
func TestHostileStalledLayer(t *testing.T) {
	p := faultproxy.Start(t, false)
	img := p.Push(t)
	c, req := hostileClient(t, p, img)
	p.Add(faultproxy.Rule{Match: faultproxy.Blobs(http.MethodGet), Do: p.Stall("application/octet-stream")})
	start := time.Now()
	_, err := c.Extract(context.Background(), req, filepath.Join(t.TempDir(), "x"), ExtractOptions{KernelVersion: "6.1.0-56-amd64"})
	require.Error(t, err)
	assert.Less(t, time.Since(start), 30*time.Second)
	assert.Contains(t, err.Error(), "no data for 2s")
}

func TestRetryAfterPastTheDeadline(t *testing.T) {
	p := faultproxy.Start(t, false)
	img := p.Push(t)
	c, req := hostileClient(t, p, img)
	p.Add(faultproxy.Rule{Match: faultproxy.Manifests(), Do: faultproxy.Status(http.StatusServiceUnavailable, map[string]string{"Retry-After": "20"}, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Check(ctx, req)
	require.Error(t, err)
	assert.Equal(t, reason.RegistryUnavailable, reason.Of(err))
	assert.Contains(t, err.Error(), "asked to retry after 20s, but the call's deadline is")
	assert.Less(t, time.Since(start), 4*time.Second, "fails at once, not at the deadline")
}

func TestCheckTimeout(t *testing.T) {
	reg := newTestRegistry(t, true, "", "")
	reg.push(t, "kmm/slow:v1", false)
	reg.inject(fault{stall: 3 * time.Second})
	c := newChecker(t, WithCABundle(reg.caPEM()), WithTimeouts(500*time.Millisecond, 0))
	start := time.Now()
	_, err := c.Check(context.Background(), Request{Image: reg.host + "/kmm/slow:v1"})
	require.Error(t, err)
	assert.Equal(t, reason.RegistryUnavailable, reason.Of(err))
	assert.Contains(t, err.Error(), "the image check did not finish within 500ms")
	assert.Less(t, time.Since(start), 2500*time.Millisecond)
}

func TestClassifyLocalIO(t *testing.T) {
	dir := t.TempDir()
	_, openErr := os.Open(filepath.Join(dir, "missing"))
	linkErr := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	for _, err := range []error{
		fmt.Errorf("layer 0: %w", &os.PathError{Op: "write", Path: "/var/run/kmmkit/images/x", Err: syscall.ENOSPC}),
		openErr, linkErr,
		os.NewSyscallError("fsync", syscall.EIO),
		syscall.EROFS,
	} {
		e := classify("img", err, AuthInfo{})
		assert.Equal(t, reason.LocalIOError, e.Reason, "%v", err)
		assert.Contains(t, e.Error(), "the registry is not at fault")
	}
	_, dialErr := net.Dial("tcp", "127.0.0.1:1") // a net.OpError around an os.SyscallError
	require.Error(t, dialErr)
	e := classify("img", dialErr, AuthInfo{})
	assert.Equal(t, reason.RegistryUnavailable, e.Reason, "%v", dialErr)
	e = classify("img", &url.Error{Op: "Get", URL: "https://r/v2/", Err: syscall.ECONNRESET}, AuthInfo{})
	assert.Equal(t, reason.RegistryUnavailable, e.Reason)
}

func TestSafeText(t *testing.T) {
	s := redactURLs(`Get "https://user:pw@storage.example.com/blob?X-Amz-Signature=abc&x=1": 403; see http://h/p?token=t`)
	assert.Equal(t, `Get "https://storage.example.com/blob?[redacted]": 403; see http://h/p?[redacted]`, s)
	long := &Error{Reason: ReasonUnknown, Image: "img", Err: errString(strings.Repeat("x", 5000))}
	assert.Less(t, len(long.Error()), maxErrorText+100)
}

type errString string

func (e errString) Error() string { return string(e) }
