package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// RetryPolicy bounds the retries of transient failures: 5xx answers, 429
// and 503 (honouring Retry-After), connection resets and refusals, and
// timeouts. Definite answers (2xx, 3xx, 4xx other than 429) are never
// retried.
type RetryPolicy struct {
	// Attempts is the most requests made for one call, first one included.
	Attempts int
	// Base is the first backoff; it doubles on each retry, with jitter.
	Base time.Duration
	// Max caps one backoff.
	Max time.Duration
	// MaxRetryAfter is the longest Retry-After honoured. A registry that
	// asks for a longer wait, or for one that ends after the call's
	// deadline, fails the call at once with RegistryUnavailable saying
	// so. 0 means Max.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy retries up to 4 times, waiting 200 ms, 400 ms, ...
// at most 5 s each, and honours a Retry-After of up to 30 s: without
// Retry-After a call gives up within about 20 s plus its requests.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Attempts: 5, Base: 200 * time.Millisecond, Max: 5 * time.Second, MaxRetryAfter: 30 * time.Second}
}

// maxRedirects is the most redirects one request follows, as net/http's
// default policy (which go-containerregistry's own policy lifts).
const maxRedirects = 10

var errRetriesExhausted = errors.New("giving up after retries")

// errPlainHTTP refuses plain HTTP to a registry that was not marked
// insecure.
var errPlainHTTP = errors.New("plain HTTP refused")

// retryAfterError is a Retry-After the call will not wait for.
type retryAfterError struct {
	status int
	wait   time.Duration
	limit  time.Duration // the cap, or the time left before the deadline
	byCap  bool
}

func (e *retryAfterError) Error() string {
	if e.byCap {
		return fmt.Sprintf("the registry answered %d and asked to retry after %s, more than the %s this client waits (RetryPolicy.MaxRetryAfter): giving up at once",
			e.status, e.wait, e.limit)
	}
	return fmt.Sprintf("the registry answered %d and asked to retry after %s, but the call's deadline is %s away: giving up at once",
		e.status, e.wait, e.limit.Round(time.Second))
}

// redirectError is a redirect chain longer than maxRedirects.
type redirectError struct {
	url string
}

func (e *redirectError) Error() string {
	return fmt.Sprintf("%s: stopped after %d redirects (a redirect loop?)", e.url, maxRedirects)
}

// tooLargeError is a manifest (or registry ping) over the size limit.
type tooLargeError struct {
	url   string
	size  int64 // -1 when unknown
	limit int64
}

func (e *tooLargeError) Error() string {
	if e.size >= 0 {
		return fmt.Sprintf("%s: the manifest is %d bytes, more than the %d-byte limit (registry.WithMaxManifestSize)", e.url, e.size, e.limit)
	}
	return fmt.Sprintf("%s: the manifest is more than the %d-byte limit (registry.WithMaxManifestSize)", e.url, e.limit)
}

// idleError is a response body that stopped making progress.
type idleError struct {
	url  string
	idle time.Duration
}

func (e *idleError) Error() string {
	return fmt.Sprintf("%s: no data for %s while reading the answer (registry.WithIdleTimeout)", e.url, e.idle)
}

// Timeout implements net.Error's method.
func (e *idleError) Timeout() bool { return true }

// deadlineError is the Client's own deadline for a call or a request.
type deadlineError struct {
	what string
	d    time.Duration
}

func (e *deadlineError) Error() string {
	return fmt.Sprintf("the %s did not finish within %s (registry.WithTimeouts)", e.what, e.d)
}

// Timeout implements net.Error's method.
func (e *deadlineError) Timeout() bool { return true }

// withCause adds the cause of ctx's end to err, when it is one of ours.
func withCause(ctx context.Context, err error) error {
	cause := context.Cause(ctx)
	var ie *idleError
	var de *deadlineError
	if cause == nil || errors.Is(err, cause) || !(errors.As(cause, &ie) || errors.As(cause, &de)) {
		return err
	}
	return fmt.Errorf("%w: %w", cause, err)
}

// answer is what the transport learnt about a response; it rides on the
// response's Request context, so errors built from the response carry it.
type answer struct {
	contentType string
	proven      bool // the host answered GET /v2/ as a registry
	redirected  bool // from another host than the request's first
	attempts    int
}

type answerKey struct{}

// answerOf returns what the transport learnt about the response behind te.
func answerOf(te *transport.Error) *answer {
	if te.Request == nil {
		return nil
	}
	a, _ := te.Request.Context().Value(answerKey{}).(*answer)
	return a
}

// pingBook remembers which hosts answered GET /v2/ as a registry.
type pingBook struct {
	mu    sync.Mutex
	hosts map[string]bool
}

func (b *pingBook) record(host string, resp *http.Response) {
	api := strings.HasPrefix(resp.Header.Get("Docker-Distribution-API-Version"), "registry/2")
	ct := mediaType(resp.Header.Get("Content-Type"))
	ok := false
	switch resp.StatusCode {
	case http.StatusOK:
		ok = api || !strings.HasPrefix(ct, "text/")
	case http.StatusUnauthorized:
		ok = api || resp.Header.Get("WWW-Authenticate") != ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hosts == nil {
		b.hosts = map[string]bool{}
	}
	if _, known := b.hosts[host]; !known && len(b.hosts) >= maxCached {
		for h := range b.hosts { // forgetting a host only makes its 404s errors
			delete(b.hosts, h)
			break
		}
	}
	b.hosts[host] = ok
}

func (b *pingBook) proven(host string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hosts[host]
}

// netConfig is what every transport of a Client shares.
type netConfig struct {
	policy      RetryPolicy
	idle        time.Duration // a body read that makes no progress this long fails
	maxManifest int64         // bytes of one manifest or ping answer
	perRequest  time.Duration // deadline of a request whose context has none
	pings       *pingBook
}

// retryTransport is the transport every registry request goes through: it
// refuses plain HTTP unless allowed, caps redirects, bounds each request
// (its time, a body's idle time, a manifest's size), retries transient
// failures of idempotent requests, and notes what it learns on the
// response.
type retryTransport struct {
	inner http.RoundTripper
	cfg   *netConfig
	// insecure allows plain HTTP; without it every http:// request is
	// refused, so TLS is never silently skipped.
	insecure bool
}

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !t.insecure {
		return nil, fmt.Errorf("%w to %s: set registryTLS.insecure to allow it", errPlainHTTP, req.URL.Host)
	}
	first, hops := req, 0
	for first.Response != nil && first.Response.Request != nil {
		first, hops = first.Response.Request, hops+1
	}
	if hops > maxRedirects {
		return nil, &redirectError{url: plainURL(first.URL)}
	}
	base := req.Context()
	release := func() {}
	if _, ok := base.Deadline(); !ok && t.cfg.perRequest > 0 {
		var cancel context.CancelFunc
		base, cancel = context.WithTimeoutCause(base, t.cfg.perRequest, &deadlineError{what: "request", d: t.cfg.perRequest})
		release = cancel
	}
	idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead || req.Body == nil || req.GetBody != nil
	attempts := max(t.cfg.policy.Attempts, 1)
	for attempt := 1; ; attempt++ {
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				release()
				return nil, err
			}
			req.Body = body
		}
		actx, acancel := context.WithCancelCause(base)
		resp, err := t.inner.RoundTrip(req.WithContext(actx))
		if err != nil {
			err = withCause(actx, err)
		}
		last := !idempotent || attempt >= attempts
		wait, retry, stop := t.retryable(resp, err, attempt, last, base)
		if stop != nil || (retry && !last) {
			discard(resp)
			acancel(nil)
			if stop != nil {
				release()
				return nil, stop
			}
			timer := time.NewTimer(wait)
			select {
			case <-base.Done():
				timer.Stop()
				release()
				return nil, withCause(base, base.Err())
			case <-timer.C:
			}
			continue
		}
		if err != nil {
			acancel(nil)
			release()
			if retry {
				err = fmt.Errorf("%w (%d attempts): %w", errRetriesExhausted, attempt, err)
			}
			return nil, err
		}
		return t.watch(req, resp, first, hops, attempt, actx, acancel, release)
	}
}

// discard drains a little of a response that is not used, and closes it.
func discard(resp *http.Response) {
	if resp != nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
}

// retryable decides whether to retry, and after how long; stop is set
// when the registry asks for a wait the call will not make.
func (t *retryTransport) retryable(resp *http.Response, err error, attempt int, last bool, ctx context.Context) (time.Duration, bool, error) {
	p := t.cfg.policy
	backoff := p.Base << (attempt - 1)
	if backoff <= 0 || backoff > p.Max {
		backoff = p.Max
	}
	backoff = backoff/2 + rand.N(backoff/2+1)
	if err != nil {
		var ie *idleError
		var de *deadlineError
		if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.As(err, &ie) || errors.As(err, &de) {
			return 0, false, nil
		}
		var certErr *tls.CertificateVerificationError
		var unknownCA x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		var recordErr tls.RecordHeaderError
		if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &recordErr) {
			return 0, false, nil
		}
		var netErr net.Error
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.ErrUnexpectedEOF) ||
			errors.Is(err, io.EOF) || errors.As(err, &netErr) {
			return backoff, true, nil
		}
		return 0, false, nil
	}
	code := resp.StatusCode
	transient := code == http.StatusTooManyRequests ||
		(code >= 500 && code != http.StatusNotImplemented && code != http.StatusHTTPVersionNotSupported)
	if !transient {
		return 0, false, nil
	}
	if code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
		return backoff, true, nil
	}
	d, ok := retryAfter(resp.Header.Get("Retry-After"))
	if !ok {
		return backoff, true, nil
	}
	if last {
		return 0, true, nil
	}
	limit := p.MaxRetryAfter
	if limit <= 0 {
		limit = p.Max
	}
	if d > limit {
		return 0, false, &retryAfterError{status: code, wait: d, limit: limit, byCap: true}
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
		return 0, false, &retryAfterError{status: code, wait: d, limit: time.Until(deadline)}
	}
	return d, true, nil
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// mediaType is a Content-Type without its parameters.
func mediaType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return strings.TrimSpace(ct)
}

// newTransport builds the transport for one TLS setting: the base
// transport with the CA bundle, certificate checks turned off only when
// asked, and the Client's bounds and retries.
func newTransport(base *http.Transport, pool *x509.CertPool, tlsOpts v1beta1.TLSOptions, cfg *netConfig) http.RoundTripper {
	t := base.Clone()
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.TLSClientConfig != nil {
		tc = t.TLSClientConfig.Clone()
	}
	if pool != nil {
		tc.RootCAs = pool
	}
	if tlsOpts.InsecureSkipTLSVerify {
		tc.InsecureSkipVerify = true //nolint:gosec // the user asked for it with insecureSkipTLSVerify
	}
	t.TLSClientConfig = tc
	return &retryTransport{inner: t, cfg: cfg, insecure: tlsOpts.Insecure}
}

// defaultBaseTransport is http.DefaultTransport's settings with bounded
// dial and header timeouts, so a stalled registry ends in a retry.
func defaultBaseTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 15 * time.Second
	t.MaxIdleConnsPerHost = 16
	return t
}
