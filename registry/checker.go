package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"k8s.io/utils/clock"

	"github.com/kmmkit/kmmkit/internal/ctxlog"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
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

// Option configures a Client (see NewClient). Options only record a
// value; NewClient checks them all and reports the first one that is
// wrong.
type Option func(*options)

// options are what the Options of a Client record.
type options struct {
	caBundle        []byte
	caSet           bool
	ttlExists       time.Duration
	ttlMissing      time.Duration
	ttlSet          bool
	retry           *RetryPolicy
	base            *http.Transport
	log             ctxlog.Logger
	clock           clock.PassiveClock
	checkTimeout    time.Duration
	transferTimeout time.Duration
	idleTimeout     *time.Duration
	maxManifest     *int64
}

// WithCABundle adds PEM certificates to the system roots for TLS;
// NewClient fails when the bundle holds no PEM certificate.
func WithCABundle(pem []byte) Option {
	return func(o *options) { o.caBundle, o.caSet = pem, true }
}

// WithTTL sets how long answers are cached: exists for positive answers,
// missing for "does not exist" (shorter, so a pushed image is seen soon).
// Errors are never cached.
func WithTTL(exists, missing time.Duration) Option {
	return func(o *options) { o.ttlExists, o.ttlMissing, o.ttlSet = exists, missing, true }
}

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(o *options) { o.retry = &p }
}

// WithBaseTransport replaces the HTTP transport registries are reached
// through (its TLS settings are extended, not replaced).
func WithBaseTransport(t *http.Transport) Option {
	return func(o *options) { o.base = t }
}

// WithLogger makes the Client log each registry answer at verbosity 1 to
// l. Without it, each call logs to the logger of its context
// (logr.FromContextOrDiscard).
func WithLogger(l logr.Logger) Option {
	return func(o *options) { o.log = ctxlog.Given(l) }
}

// WithClock replaces the clock the cache's ages are read from (tests).
func WithClock(c clock.PassiveClock) Option {
	return func(o *options) { o.clock = c }
}

// The Client's default bounds.
const (
	// DefaultCheckTimeout bounds one Check or Verify.
	DefaultCheckTimeout = time.Minute
	// DefaultTransferTimeout bounds one Push, and each request of a Pull or
	// an Extract.
	DefaultTransferTimeout = 10 * time.Minute
	// DefaultIdleTimeout fails a response body that sends nothing for
	// this long.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxManifestSize bounds one manifest or index, read or
	// announced (Content-Length). A kmod image's manifest is a few KiB;
	// registries must accept manifests of at least 4 MiB.
	DefaultMaxManifestSize = 4 << 20
)

// WithTimeouts sets the Client's own deadlines, applied when the caller's
// context has no earlier one: check bounds one Check or Verify, transfer
// one Push and each request of a Pull or an Extract. A call that runs out
// of time fails with RegistryUnavailable naming the deadline. Values <= 0
// keep the defaults (DefaultCheckTimeout, DefaultTransferTimeout).
func WithTimeouts(check, transfer time.Duration) Option {
	return func(o *options) { o.checkTimeout, o.transferTimeout = check, transfer }
}

// WithIdleTimeout makes a response body read that makes no progress for d
// fail with RegistryUnavailable (default DefaultIdleTimeout); NewClient
// refuses d <= 0. Waiting for the headers is bounded by the base
// transport's ResponseHeaderTimeout (15 s by default).
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) { o.idleTimeout = &d }
}

// WithMaxManifestSize bounds one manifest or index (default
// DefaultMaxManifestSize); a larger one fails with reason.UnsafeImage,
// while it is read, before it is held in memory. NewClient refuses n <= 0.
func WithMaxManifestSize(n int64) Option {
	return func(o *options) { o.maxManifest = &n }
}

// Client is the registry-backed ImageChecker; it also pulls and extracts
// kernel-module images and pushes built ones, with the same credentials,
// TLS settings, bounds and retries. It is safe for concurrent use; share
// one per process.
type Client struct {
	pool            *x509.CertPool
	ttlExists       time.Duration
	ttlMissing      time.Duration
	retry           RetryPolicy
	base            *http.Transport
	log             ctxlog.Logger
	clock           clock.PassiveClock
	checkTimeout    time.Duration
	transferTimeout time.Duration
	idleTimeout     time.Duration
	maxManifest     int64
	net             *netConfig

	mu       sync.Mutex
	cache    map[string]*cachedAnswer
	blobs    map[string]time.Time // when a blob was last seen
	inflight map[string]*call
	pullers  map[string]*pooledPuller
}

// cachedAnswer is a cached answer and what it was made from.
type cachedAnswer struct {
	res   Result
	top   v1.Hash         // the digest the reference named (index or manifest)
	blobs []v1.Descriptor // config and layers of the platform's manifest
	pin   authn.Keychain  // the keychain, for keychains told apart by identity
}

// pooledPuller is a shared puller and the repositories it has served.
type pooledPuller struct {
	p     *remote.Puller
	repos map[string]struct{}
}

// call is a check in progress that later callers wait for.
type call struct {
	done chan struct{}
	res  Result
	err  error
}

// maxCached bounds the answer and blob caches and the puller pool;
// maxRepos bounds the repositories one pooled puller serves (it keeps
// state for each).
const (
	maxCached = 4096
	maxRepos  = 256
)

// NewClient returns a Client. By default answers are cached for 5
// minutes (exists) and 30 seconds (missing). It fails, naming the
// option, when an option's value is unusable: a CA bundle without a PEM
// certificate, an idle timeout or a manifest size limit that is not
// positive.
func NewClient(opts ...Option) (*Client, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	c := &Client{
		ttlExists:       5 * time.Minute,
		ttlMissing:      30 * time.Second,
		retry:           DefaultRetryPolicy(),
		log:             o.log,
		clock:           clock.RealClock{},
		checkTimeout:    DefaultCheckTimeout,
		transferTimeout: DefaultTransferTimeout,
		idleTimeout:     DefaultIdleTimeout,
		maxManifest:     DefaultMaxManifestSize,
		base:            o.base,
		cache:           map[string]*cachedAnswer{},
		blobs:           map[string]time.Time{},
		inflight:        map[string]*call{},
		pullers:         map[string]*pooledPuller{},
	}
	if o.caSet {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(o.caBundle) {
			return nil, errors.New("registry: WithCABundle: the CA bundle holds no PEM certificate")
		}
		c.pool = pool
	}
	if o.ttlSet {
		c.ttlExists, c.ttlMissing = o.ttlExists, o.ttlMissing
	}
	if o.retry != nil {
		c.retry = *o.retry
	}
	if o.clock != nil {
		c.clock = o.clock
	}
	if o.checkTimeout > 0 {
		c.checkTimeout = o.checkTimeout
	}
	if o.transferTimeout > 0 {
		c.transferTimeout = o.transferTimeout
	}
	if o.idleTimeout != nil {
		if *o.idleTimeout <= 0 {
			return nil, fmt.Errorf("registry: WithIdleTimeout(%v): the idle timeout must be positive", *o.idleTimeout)
		}
		c.idleTimeout = *o.idleTimeout
	}
	if o.maxManifest != nil {
		if *o.maxManifest <= 0 {
			return nil, fmt.Errorf("registry: WithMaxManifestSize(%d): the manifest size limit must be positive", *o.maxManifest)
		}
		c.maxManifest = *o.maxManifest
	}
	if c.base == nil {
		c.base = defaultBaseTransport()
	}
	c.net = &netConfig{policy: c.retry, idle: c.idleTimeout, maxManifest: c.maxManifest,
		perRequest: c.transferTimeout, pings: &pingBook{}}
	return c, nil
}

// logger is the logger of a call: WithLogger's, or the context's.
func (c *Client) logger(ctx context.Context) logr.Logger { return c.log.From(ctx) }

// now reads the Client's clock.
func (c *Client) now() time.Time { return c.clock.Now() }

// key identifies a request for the cache; ok is false when its
// credentials cannot be told apart safely, and then nothing is cached.
func (r Request) key() (key string, pin authn.Keychain, ok bool) {
	conn, pin, ok := r.connKey()
	p := ""
	if r.Platform != nil {
		p = r.Platform.String()
	}
	return r.Image + "|" + p + "|" + conn, pin, ok
}

// connKey identifies the TLS setting and credentials of a request: the
// requests that can share cached answers and one connection setup.
// Credentials are told apart by AuthInfo.Key, or a KeyedKeychain's Key,
// or else by the keychain's identity (pin, which the cache holds so the
// address is not reused); a keychain that is not a pointer cannot be told
// apart, and ok is false.
func (r Request) connKey() (key string, pin authn.Keychain, ok bool) {
	tlsKey := fmt.Sprintf("%t|%t|", r.TLS.Insecure, r.TLS.InsecureSkipTLSVerify)
	kc := r.Auth.Keychain
	switch {
	case kc == nil:
		return tlsKey + "anonymous", nil, true
	case r.Auth.Key != "":
		return tlsKey + "key:" + r.Auth.Key, nil, true
	}
	if k, isKeyed := kc.(KeyedKeychain); isKeyed && k.Key() != "" {
		return tlsKey + "key:" + k.Key(), nil, true
	}
	if reflect.ValueOf(kc).Kind() == reflect.Pointer {
		return fmt.Sprintf("%sidentity:%T:%p", tlsKey, kc, kc), kc, true
	}
	return "", nil, false
}

// Check answers from the cache when the answer is fresh, and otherwise
// asks the registry; concurrent checks of one request share one call.
//
// The image exists when the registry serves its manifest (for an index
// and a Platform, the platform's manifest) and every blob of it (config
// and layers). It is missing only on a registry's definite answer: a 404
// with MANIFEST_UNKNOWN, NAME_UNKNOWN or, for a blob, BLOB_UNKNOWN, from a
// host that answered GET /v2/ as a registry. Every other answer is an
// *Error whose Reason says whose fault it is.
func (c *Client) Check(ctx context.Context, req Request) (Result, error) {
	return c.check(ctx, req, false)
}

// Verify asks the registry even when a cached answer is fresh, and
// refreshes the cache, so an image (or a blob of it) that vanished is
// noticed.
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

// deadline bounds ctx by d, unless it already ends sooner.
func deadline(ctx context.Context, what string, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); d <= 0 || (ok && time.Until(dl) <= d) {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, d, &deadlineError{what: what, d: d})
}

func (c *Client) ttl(r Result) time.Duration {
	if r.Exists {
		return c.ttlExists
	}
	return c.ttlMissing
}

func (c *Client) check(ctx context.Context, req Request, fresh bool) (Result, error) {
	ctx, cancel := deadline(ctx, "image check", c.checkTimeout)
	defer cancel()
	key, pin, cacheable := req.key()
	if !cacheable {
		e, err := c.ask(ctx, req, nil, fresh)
		if err != nil {
			return Result{}, err
		}
		return e.res, nil
	}
	c.mu.Lock()
	prev := c.cache[key]
	if prev != nil && prev.pin != pin {
		prev = nil
	}
	if prev != nil && !fresh && c.now().Sub(prev.res.CheckedAt) < c.ttl(prev.res) {
		c.mu.Unlock()
		r := prev.res
		r.Cached = true
		return r, nil
	}
	if cl, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-cl.done:
			return cl.res, cl.err
		case <-ctx.Done():
			return Result{}, classify(req.Image, withCause(ctx, ctx.Err()), req.Auth)
		}
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[key] = cl
	c.mu.Unlock()

	e, err := c.ask(ctx, req, prev, fresh)
	cl.err = err
	if err == nil {
		e.pin = pin
		cl.res = e.res
	}

	c.mu.Lock()
	delete(c.inflight, key)
	if err == nil {
		now := c.now()
		evict(c.cache, maxCached, func(e *cachedAnswer) bool { return now.Sub(e.res.CheckedAt) >= c.ttl(e.res) })
		c.cache[key] = e
	}
	c.mu.Unlock()
	close(cl.done)
	return cl.res, cl.err
}

// puller returns the shared puller for a TLS and credential setting, so
// registry pings and token exchanges are reused across checks.
func (c *Client) puller(req Request) (*remote.Puller, error) {
	key, _, ok := req.connKey()
	if !ok {
		return remote.NewPuller(c.remoteOptions(req)...)
	}
	repo := req.Image
	if ref, err := ParseReference(req.Image, req.TLS); err == nil {
		repo = ref.Context().Name()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if pp, ok := c.pullers[key]; ok {
		if _, seen := pp.repos[repo]; seen || len(pp.repos) < maxRepos {
			pp.repos[repo] = struct{}{}
			return pp.p, nil
		}
	}
	p, err := remote.NewPuller(c.remoteOptions(req)...)
	if err != nil {
		return nil, err
	}
	evict(c.pullers, maxCached, func(*pooledPuller) bool { return false })
	c.pullers[key] = &pooledPuller{p: p, repos: map[string]struct{}{repo: {}}}
	return p, nil
}

// remoteOptions are the go-containerregistry options for a request's TLS
// setting and credentials. Retries happen in our transport, which honours
// Retry-After; the library's own retries are turned off.
func (c *Client) remoteOptions(req Request) []remote.Option {
	opts := []remote.Option{
		remote.WithTransport(newTransport(c.base, c.pool, req.TLS, c.net)),
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

// ask queries the registry. With a previous answer that the image exists,
// a HEAD of the reference tells whether it still names the same manifest;
// otherwise the manifest is read (one GET gives both the answer and the
// blobs to confirm).
func (c *Client) ask(ctx context.Context, req Request, prev *cachedAnswer, fresh bool) (*cachedAnswer, error) {
	ref, err := ParseReference(req.Image, req.TLS)
	if err != nil {
		return nil, &Error{Reason: ReasonInvalid, Image: req.Image, Err: err}
	}
	p, err := c.puller(req)
	if err != nil {
		return nil, classify(req.Image, err, req.Auth)
	}
	e := &cachedAnswer{res: Result{CheckedAt: c.now()}}
	if prev != nil && prev.res.Exists {
		desc, err := p.Head(ctx, ref)
		switch {
		case err == nil && !isManifestType(desc.MediaType):
			return nil, notManifest(req.Image, "HEAD", desc.MediaType)
		case err == nil && desc.Digest == prev.top:
			e.top, e.blobs = prev.top, prev.blobs
			e.res.Exists, e.res.Digest, e.res.IndexDigest = true, prev.res.Digest, prev.res.IndexDigest
			return c.confirmBlobs(ctx, p, ref, req, e, fresh)
		case err != nil && !isStatus(err, http.StatusNotFound, http.StatusMethodNotAllowed):
			// A HEAD 404 has no body, hence no error code: the GET says.
			return nil, classify(req.Image, err, req.Auth)
		}
	}
	d, err := p.Get(ctx, ref)
	if err != nil {
		if notFound(err) {
			e.res.Missing = missingWhy(err)
			c.logger(ctx).V(1).Info("image missing", "image", req.Image, "why", e.res.Missing)
			return e, nil
		}
		return nil, classify(req.Image, err, req.Auth)
	}
	m, err := parseManifest(d.Manifest, d.MediaType)
	if err != nil {
		return nil, notManifest(req.Image, "GET", d.MediaType, err)
	}
	e.top = d.Digest
	e.res.Exists, e.res.Digest = true, d.Digest.String()
	if m.index != nil {
		if req.Platform == nil {
			c.logger(ctx).V(1).Info("image checked", "image", req.Image, "exists", true, "digest", e.res.Digest)
			return e, nil // no platform: the index as it is
		}
		e.res.IndexDigest = e.res.Digest
		var child *v1.Descriptor
		for i := range m.index.Manifests {
			if pl := m.index.Manifests[i].Platform; pl != nil && pl.Satisfies(*req.Platform) {
				child = &m.index.Manifests[i]
				break
			}
		}
		if child == nil {
			e.res.Exists, e.res.Digest = false, ""
			e.res.Missing = "the index has no manifest for " + req.Platform.String()
			return e, nil
		}
		cd, err := p.Get(ctx, ref.Context().Digest(child.Digest.String()))
		if err != nil {
			if notFound(err) {
				e.res.Exists, e.res.Digest = false, ""
				e.res.Missing = fmt.Sprintf("the index names manifest %s for %s, and the registry does not have it", child.Digest, req.Platform)
				return e, nil
			}
			return nil, classify(req.Image, err, req.Auth)
		}
		if m, err = parseManifest(cd.Manifest, cd.MediaType); err == nil && m.image == nil {
			err = errors.New("an index inside an index")
		}
		if err != nil {
			return nil, notManifest(req.Image, "GET", cd.MediaType, fmt.Errorf("manifest %s for %s: %w", child.Digest, req.Platform, err))
		}
		e.res.Digest = child.Digest.String()
	}
	e.blobs = append([]v1.Descriptor{m.image.Config}, m.image.Layers...)
	return c.confirmBlobs(ctx, p, ref, req, e, fresh)
}

// confirmBlobs checks that every blob of the manifest the node will pull
// is in the registry (a HEAD each, answers cached as long as an "exists"
// answer). A blob the registry definitely does not have makes the image
// missing: it cannot be pulled, and a rebuild pushes it again.
func (c *Client) confirmBlobs(ctx context.Context, p *remote.Puller, ref name.Reference, req Request, e *cachedAnswer, fresh bool) (*cachedAnswer, error) {
	repo := ref.Context()
	conn, _, cacheable := req.connKey()
	for i, d := range e.blobs {
		if len(d.URLs) > 0 || !d.MediaType.IsDistributable() {
			continue // the node fetches foreign layers from their URLs
		}
		what := "config"
		if i > 0 {
			what = fmt.Sprintf("layer %d of %d", i, len(e.blobs)-1)
		}
		bkey := repo.Name() + "@" + d.Digest.String() + "|" + conn
		if cacheable && !fresh && c.blobSeen(bkey) {
			continue
		}
		l, err := p.Layer(ctx, repo.Digest(d.Digest.String()))
		if err != nil {
			return nil, classify(req.Image, err, req.Auth)
		}
		size, err := l.Size()
		switch {
		case err == nil:
			if size >= 0 && d.Size > 0 && size != d.Size {
				return nil, &Error{Reason: reason.ImageCorrupt, Image: req.Image,
					Detail: fmt.Sprintf("%s %s is %d bytes in the registry, the manifest says %d", what, d.Digest, size, d.Size)}
			}
		case isStatus(err, http.StatusNotFound):
			rc, gerr := l.Compressed() // a HEAD 404 has no error code: the GET says
			if gerr == nil {
				rc.Close()
				break
			}
			if blobNotFound(gerr) {
				e.res = Result{CheckedAt: e.res.CheckedAt, Missing: fmt.Sprintf(
					"%s %s of manifest %s is not in the registry (BLOB_UNKNOWN): the image cannot be pulled", what, d.Digest, e.res.Digest)}
				c.logger(ctx).V(1).Info("image missing", "image", req.Image, "why", e.res.Missing)
				return e, nil
			}
			return nil, classify(req.Image, gerr, req.Auth)
		default:
			return nil, classify(req.Image, err, req.Auth)
		}
		if cacheable {
			c.sawBlob(bkey)
		}
	}
	c.logger(ctx).V(1).Info("image checked", "image", req.Image, "exists", true, "digest", e.res.Digest, "blobs", len(e.blobs))
	return e, nil
}

func (c *Client) blobSeen(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.blobs[key]
	return ok && c.now().Sub(at) < c.ttlExists
}

func (c *Client) sawBlob(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	evict(c.blobs, maxCached, func(at time.Time) bool { return now.Sub(at) >= c.ttlExists })
	c.blobs[key] = now
}

// missingWhy says which definite "not found" the registry gave.
func missingWhy(err error) string {
	var te *transport.Error
	if errors.As(err, &te) && !hasCode(te, transport.ManifestUnknownErrorCode) {
		return "repository unknown"
	}
	return "manifest unknown"
}
