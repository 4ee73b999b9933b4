// Package faultproxy is a reverse proxy in front of the real test
// registry (docker-registry, see internal/testenv) that misbehaves on
// request: redirect loops, stalled bodies, answers that are not a
// registry's, huge manifests, Retry-After, redirects to a storage host
// that echoes its signed URL. Cases lists the hostile answers the
// registry client must survive, with what a user must read for each, so
// the library's tests and the CLI's run the same table.
package faultproxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

// Proxy forwards to a docker-registry unless a Rule takes the request.
type Proxy struct {
	// Host is the proxy's host:port, the registry host of the images a
	// test checks.
	Host string
	// TLS is set when the proxy speaks TLS (in front of the TLS registry).
	TLS bool

	regs     testenv.Registries
	upstream *url.URL
	up       http.RoundTripper // to the upstream registry
	srv      *httptest.Server
	stop     chan struct{}
	requests atomic.Int64

	mu    sync.Mutex
	rules []*Rule
}

// Rule takes the requests it matches, Times times (0: every time).
type Rule struct {
	Match func(*http.Request) bool
	Times int
	Do    http.HandlerFunc
}

// Start starts a proxy in front of the plain registry, or with useTLS in
// front of the TLS one (the proxy then serves TLS with its own
// certificate, see CAPEM, and the registry asks for the password).
func Start(t testing.TB, useTLS bool) *Proxy {
	t.Helper()
	regs := testenv.Registry(t)
	p := &Proxy{TLS: useTLS, regs: regs, stop: make(chan struct{})}
	tr := http.RoundTripper(http.DefaultTransport.(*http.Transport).Clone())
	p.upstream = &url.URL{Scheme: "http", Host: regs.Plain}
	if useTLS {
		ca, err := os.ReadFile(regs.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		tr = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		p.upstream = &url.URL{Scheme: "https", Host: regs.TLS}
	}
	p.up = tr
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(p.upstream)
			r.Out.Host = p.upstream.Host
		},
		Transport: tr,
		ErrorLog:  nilLog(),
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if rule := p.take(r); rule != nil {
			rule.Do(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	p.srv.Config.ErrorLog = nilLog()
	if useTLS {
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(func() {
		close(p.stop)
		p.srv.Close()
	})
	p.Host = strings.TrimPrefix(strings.TrimPrefix(p.srv.URL, "https://"), "http://")
	return p
}

func (p *Proxy) take(r *http.Request) *Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, rule := range p.rules {
		if rule.Match == nil || rule.Match(r) {
			if rule.Times > 0 {
				rule.Times--
				if rule.Times == 0 {
					p.rules = append(p.rules[:i:i], p.rules[i+1:]...)
				}
			}
			return rule
		}
	}
	return nil
}

// Add adds rules, checked in order before the proxy forwards a request.
func (p *Proxy) Add(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range rules {
		p.rules = append(p.rules, &rules[i])
	}
}

// Reset drops every rule and zeroes the request count.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
	p.requests.Store(0)
}

// Requests is how many requests the proxy received.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// CAPEM is the proxy's certificate, to trust it (TLS proxies only).
func (p *Proxy) CAPEM() []byte {
	if !p.TLS {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
}

// DockerConfig is a Docker config.json with the registry's credentials
// for the proxy host (empty for the plain registry, which needs none).
func (p *Proxy) DockerConfig() []byte {
	if !p.TLS {
		return []byte(`{"auths":{}}`)
	}
	return []byte(fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, p.Host, p.regs.User, p.regs.Password))
}

// Password is the TLS registry's password, which no message may show.
func (p *Proxy) Password() string { return p.regs.Password }

// Image is an image pushed to the registry behind the proxy.
type Image struct {
	// Ref is the reference through the proxy: Host/repository:tag.
	Ref string
	// Repo is the repository path.
	Repo string
	// Digest, Config and Layer are the manifest's, the config's and the
	// (only) layer's digests.
	Digest, Config, Layer v1.Hash
	// Manifest is the manifest's bytes.
	Manifest []byte
}

// Push pushes a small random image of one layer straight to the registry
// behind the proxy, in a fresh repository.
func (p *Proxy) Push(t testing.TB) Image {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	repo := fmt.Sprintf("kmmkit-hostile-%d/mod", rand.Uint32())
	ref, err := name.ParseReference(p.upstream.Host+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithTransport(p.up)}
	if p.TLS {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: p.regs.User, Password: p.regs.Password}))
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return Image{Ref: p.Host + "/" + repo + ":v1", Repo: repo, Digest: d, Config: m.Config.Digest, Layer: m.Layers[0].Digest, Manifest: raw}
}

// DeleteBlob deletes a blob of img through the registry's API.
func (p *Proxy) DeleteBlob(t testing.TB, img Image, blob v1.Hash) {
	t.Helper()
	u := *p.upstream
	u.Path = "/v2/" + img.Repo + "/blobs/" + blob.String()
	req, err := http.NewRequest(http.MethodDelete, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.TLS {
		req.SetBasicAuth(p.regs.User, p.regs.Password)
	}
	resp, err := p.up.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE %s: %s (is storage.delete enabled?)", u.Path, resp.Status)
	}
}

func nilLog() *log.Logger { return log.New(io.Discard, "", 0) }
