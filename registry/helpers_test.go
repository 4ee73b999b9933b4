package registry

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// testRegistry is go-containerregistry's in-process registry behind an
// optional Basic-auth check and a scriptable fault injector, counting the
// manifest and blob reads it receives.
type testRegistry struct {
	srv       *httptest.Server
	host      string
	user      string
	pass      string
	manifests atomic.Int64
	blobs     atomic.Int64 // HEAD and GET

	mu     sync.Mutex
	faults []fault // consumed in order, one per request
}

// fault is what the injector does to one request.
type fault struct {
	status     int           // answer this status instead
	retryAfter string        // with this Retry-After
	reset      bool          // close the connection without answering
	stall      time.Duration // wait this long first
}

func newTestRegistry(t testing.TB, useTLS bool, user, pass string) *testRegistry {
	t.Helper()
	r := &testRegistry{user: user, pass: pass}
	inner := ggcrregistry.New(ggcrregistry.Logger(nilLogger()))
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/manifests/") && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
			r.manifests.Add(1)
		}
		if strings.Contains(req.URL.Path, "/blobs/sha256:") && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
			r.blobs.Add(1)
		}
		if f, ok := r.nextFault(); ok {
			if f.stall > 0 {
				time.Sleep(f.stall)
			}
			if f.reset {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					if tc, ok := conn.(*net.TCPConn); ok {
						tc.SetLinger(0)
					}
					conn.Close()
				}
				return
			}
			if f.status != 0 {
				if f.retryAfter != "" {
					w.Header().Set("Retry-After", f.retryAfter)
				}
				w.WriteHeader(f.status)
				return
			}
		}
		if r.user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.user || p != r.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="kmmkit-test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		inner.ServeHTTP(w, req)
	})
	r.srv = httptest.NewUnstartedServer(h)
	r.srv.Config.ErrorLog = nilLogger() // refused handshakes are expected
	if useTLS {
		r.srv.StartTLS()
	} else {
		r.srv.Start()
	}
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(strings.TrimPrefix(r.srv.URL, "https://"), "http://")
	return r
}

func (r *testRegistry) inject(f ...fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, f...)
}

func (r *testRegistry) nextFault() (fault, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.faults) == 0 {
		return fault{}, false
	}
	f := r.faults[0]
	r.faults = r.faults[1:]
	return f, true
}

// caPEM returns the test server's certificate as a CA bundle.
func (r *testRegistry) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw})
}

// pushOpts are the options that reach the test registry directly.
func (r *testRegistry) pushOpts() []remote.Option {
	opts := []remote.Option{}
	if r.srv.TLS != nil {
		pool := x509.NewCertPool()
		pool.AddCert(r.srv.Certificate())
		opts = append(opts, remote.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}))
	}
	if r.user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass}))
	}
	return opts
}

// push writes a random image (Docker v2 or OCI media types) and returns
// its digest.
func (r *testRegistry) push(t testing.TB, repoTag string, oci bool) string {
	t.Helper()
	img, err := random.Image(256, 1)
	require.NoError(t, err)
	if oci {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, r.pushOpts()...))
	d, err := img.Digest()
	require.NoError(t, err)
	return d.String()
}

// pushIndex writes an index with one image per platform and returns the
// index digest and each platform's manifest digest.
func (r *testRegistry) pushIndex(t testing.TB, repoTag string, platforms ...v1.Platform) (string, map[string]string) {
	t.Helper()
	var adds []mutate.IndexAddendum
	digests := map[string]string{}
	for _, p := range platforms {
		img, err := random.Image(128, 1)
		require.NoError(t, err)
		d, err := img.Digest()
		require.NoError(t, err)
		digests[p.String()] = d.String()
		p := p
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, r.pushOpts()...))
	d, err := idx.Digest()
	require.NoError(t, err)
	return d.String(), digests
}

func v1beta1TLS() v1beta1.TLSOptions { return v1beta1.TLSOptions{} }

// writeIndex pushes an index straight to the test registry.
func writeIndex(ref name.Reference, idx v1.ImageIndex, reg *testRegistry) error {
	return remote.WriteIndex(ref, idx, reg.pushOpts()...)
}
