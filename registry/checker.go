package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Request is one image to check.
type Request struct {
	// Image is the reference, with a tag or a digest.
	Image string
	// Platform is the platform of the node that will pull the image. For
	// an image index it decides which manifest counts: the image exists
	// for the node only if the index has a manifest for its platform. Nil
	// accepts any index as it is.
	Platform *v1.Platform
	// TLS is the Module's registryTLS.
	TLS v1beta1.TLSOptions
	// Auth gives the credentials; the zero value is anonymous.
	Auth AuthInfo
}

// Result is the answer for an image.
type Result struct {
	// Exists is true when the image (for the platform) is in the registry.
	Exists bool
	// Digest is the digest of the manifest the node will pull: for an
	// index with a platform, the platform's manifest.
	Digest string
	// IndexDigest is the digest of the index, when the reference is one.
	IndexDigest string
	// Missing says why the image does not exist, when it does not.
	Missing string
	// CheckedAt is when the registry gave this answer.
	CheckedAt time.Time
	// Cached is set when the answer came from the cache.
	Cached bool
}

// ImageChecker answers whether images exist. Check may answer from a
// cache; Verify always asks the registry.
type ImageChecker interface {
	Check(ctx context.Context, req Request) (Result, error)
	Verify(ctx context.Context, req Request) (Result, error)
}

// Option configures a Client.
type Option func(*Client) error

// WithCABundle adds PEM certificates to the system roots for TLS.
func WithCABundle(pem []byte) Option {
	return func(c *Client) error {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("CA bundle holds no PEM certificate")
		}
		c.pool = pool
		return nil
	}
}

// WithTTL sets how long answers are cached: exists for positive answers,
// missing for "does not exist" (shorter, so a pushed image is seen soon).
// Errors are never cached.
func WithTTL(exists, missing time.Duration) Option {
	return func(c *Client) error {
		c.ttlExists, c.ttlMissing = exists, missing
		return nil
	}
}

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(c *Client) error {
		c.retry = p
		return nil
	}
}

// WithBaseTransport replaces the HTTP transport registries are reached
// through (its TLS settings are extended, not replaced).
func WithBaseTransport(t *http.Transport) Option {
	return func(c *Client) error {
		c.base = t
		return nil
	}
}

// WithLogger makes the Client log each registry answer at verbosity 1.
func WithLogger(l logr.Logger) Option {
	return func(c *Client) error {
		c.log = l
		return nil
	}
}

// withClock replaces time.Now, for tests.
func withClock(now func() time.Time) Option {
	return func(c *Client) error {
		c.now = now
		return nil
	}
}

// Client is the registry-backed ImageChecker; it also pulls and extracts
// kernel-module images and pushes built ones, with the same credentials,
// TLS settings and retries. It is safe for concurrent use; share one per
// process.
type Client struct {
	pool       *x509.CertPool
	ttlExists  time.Duration
	ttlMissing time.Duration
	retry      RetryPolicy
	base       *http.Transport
	log        logr.Logger
	now        func() time.Time

	mu       sync.Mutex
	cache    map[string]Result
	inflight map[string]*call
	pullers  map[string]*remote.Puller
}

// call is a check in progress that later callers wait for.
type call struct {
	done chan struct{}
	res  Result
	err  error
}

// maxCached bounds the cache and the puller pool.
const maxCached = 4096

// NewClient returns a Client. By default answers are cached for 5
// minutes (exists) and 30 seconds (missing).
func NewClient(opts ...Option) (*Client, error) {
	c := &Client{
		ttlExists:  5 * time.Minute,
		ttlMissing: 30 * time.Second,
		retry:      DefaultRetryPolicy(),
		log:        logr.Discard(),
		now:        time.Now,
		cache:      map[string]Result{},
		inflight:   map[string]*call{},
		pullers:    map[string]*remote.Puller{},
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.base == nil {
		c.base = defaultBaseTransport()
	}
	return c, nil
}

// key identifies a request for the cache.
func (r Request) key() string {
	p := ""
	if r.Platform != nil {
		p = r.Platform.String()
	}
	return r.Image + "|" + p + "|" + r.connKey()
}

// connKey identifies the TLS setting and credentials of a request: the
// requests that can share one connection setup.
func (r Request) connKey() string {
	return fmt.Sprintf("%t|%t|%s|%p", r.TLS.Insecure, r.TLS.InsecureSkipTLSVerify, strings.Join(r.Auth.Secrets, ","), r.Auth.Keychain)
}

// Check answers from the cache when the answer is fresh, and otherwise
// asks the registry; concurrent checks of one request share one call.
func (c *Client) Check(ctx context.Context, req Request) (Result, error) {
	return c.check(ctx, req, false)
}

// Verify asks the registry even when a cached answer is fresh, and
// refreshes the cache, so an image that vanished is noticed.
func (c *Client) Verify(ctx context.Context, req Request) (Result, error) {
	return c.check(ctx, req, true)
}

// Invalidate drops every cached answer for image.
func (c *Client) Invalidate(image string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.cache {
		if strings.HasPrefix(k, image+"|") {
			delete(c.cache, k)
		}
	}
}

func (c *Client) check(ctx context.Context, req Request, fresh bool) (Result, error) {
	key := req.key()
	c.mu.Lock()
	if !fresh {
		if r, ok := c.cache[key]; ok {
			ttl := c.ttlMissing
			if r.Exists {
				ttl = c.ttlExists
			}
			if c.now().Sub(r.CheckedAt) < ttl {
				c.mu.Unlock()
				r.Cached = true
				return r, nil
			}
		}
	}
	if cl, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-cl.done:
			return cl.res, cl.err
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[key] = cl
	c.mu.Unlock()

	cl.res, cl.err = c.ask(ctx, req)

	c.mu.Lock()
	delete(c.inflight, key)
	if cl.err == nil {
		if len(c.cache) >= maxCached {
			clear(c.cache)
		}
		c.cache[key] = cl.res
	}
	c.mu.Unlock()
	close(cl.done)
	return cl.res, cl.err
}

// puller returns the shared puller for a TLS and credential setting, so
// registry pings and token exchanges are reused across checks.
func (c *Client) puller(req Request) (*remote.Puller, error) {
	key := req.connKey()
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pullers[key]; ok {
		return p, nil
	}
	p, err := remote.NewPuller(c.remoteOptions(req)...)
	if err != nil {
		return nil, err
	}
	if len(c.pullers) >= maxCached {
		clear(c.pullers)
	}
	c.pullers[key] = p
	return p, nil
}

// remoteOptions are the go-containerregistry options for a request's TLS
// setting and credentials. Retries happen in our transport, which honours
// Retry-After; the library's own retries are turned off.
func (c *Client) remoteOptions(req Request) []remote.Option {
	opts := []remote.Option{
		remote.WithTransport(newTransport(c.base, c.pool, req.TLS, c.retry)),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
		remote.WithUserAgent("kmmkit"),
	}
	if req.Auth.Keychain != nil {
		opts = append(opts, remote.WithAuthFromKeychain(req.Auth.Keychain))
	}
	return opts
}

// ParseReference parses an image reference with the TLS setting's scheme.
func ParseReference(image string, tlsOpts v1beta1.TLSOptions) (name.Reference, error) {
	var opts []name.Option
	if tlsOpts.Insecure {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(image, opts...)
}

// ask queries the registry.
func (c *Client) ask(ctx context.Context, req Request) (Result, error) {
	ref, err := ParseReference(req.Image, req.TLS)
	if err != nil {
		return Result{}, &Error{Reason: ReasonInvalid, Image: req.Image, Err: err}
	}
	p, err := c.puller(req)
	if err != nil {
		return Result{}, classify(req.Image, err, req.Auth)
	}
	res := Result{CheckedAt: c.now()}
	desc, err := p.Head(ctx, ref)
	if err != nil && !notFound(err) && isMethodNotAllowed(err) {
		var d *remote.Descriptor
		if d, err = p.Get(ctx, ref); err == nil {
			desc = &d.Descriptor
		}
	}
	switch {
	case err != nil && notFound(err):
		res.Missing = "manifest unknown"
		c.log.V(1).Info("image missing", "image", req.Image)
		return res, nil
	case err != nil:
		return Result{}, classify(req.Image, err, req.Auth)
	}
	res.Exists, res.Digest = true, desc.Digest.String()
	if desc.MediaType.IsIndex() && req.Platform != nil {
		res.IndexDigest = res.Digest
		d, err := p.Get(ctx, ref)
		if err != nil {
			if notFound(err) {
				return Result{CheckedAt: res.CheckedAt, Missing: "manifest unknown"}, nil
			}
			return Result{}, classify(req.Image, err, req.Auth)
		}
		idx, err := d.ImageIndex()
		if err != nil {
			return Result{}, classify(req.Image, err, req.Auth)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return Result{}, classify(req.Image, err, req.Auth)
		}
		res.Exists, res.Digest = false, ""
		for _, child := range m.Manifests {
			if child.Platform != nil && child.Platform.Satisfies(*req.Platform) {
				res.Exists, res.Digest = true, child.Digest.String()
				break
			}
		}
		if !res.Exists {
			res.Missing = "the index has no manifest for " + req.Platform.String()
		}
	}
	c.log.V(1).Info("image checked", "image", req.Image, "exists", res.Exists, "digest", res.Digest)
	return res, nil
}

// isMethodNotAllowed reports a registry that does not answer HEAD.
func isMethodNotAllowed(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusMethodNotAllowed
}
