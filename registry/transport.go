package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// RetryPolicy bounds the retries of transient failures: 5xx answers, 429
// (honouring Retry-After), connection resets and refusals, and timeouts.
// Definite answers (2xx, 3xx, 4xx other than 429) are never retried.
type RetryPolicy struct {
	// Attempts is the most requests made for one call, first one included.
	Attempts int
	// Base is the first backoff; it doubles on each retry, with jitter.
	Base time.Duration
	// Max caps one backoff, and one Retry-After wait.
	Max time.Duration
}

// DefaultRetryPolicy retries up to 4 times, waiting 200 ms, 400 ms, ...
// at most 5 s each: a call gives up within about 20 s plus its requests.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Attempts: 5, Base: 200 * time.Millisecond, Max: 5 * time.Second}
}

var errRetriesExhausted = errors.New("giving up after retries")

// errPlainHTTP refuses plain HTTP to a registry that was not marked
// insecure.
var errPlainHTTP = errors.New("plain HTTP refused")

// retryTransport retries transient failures of idempotent requests.
type retryTransport struct {
	inner  http.RoundTripper
	policy RetryPolicy
	// insecure allows plain HTTP; without it every http:// request is
	// refused, so TLS is never silently skipped.
	insecure bool
}

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !t.insecure {
		return nil, fmt.Errorf("%w to %s: set registryTLS.insecure to allow it", errPlainHTTP, req.URL.Host)
	}
	idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead || req.Body == nil || req.GetBody != nil
	attempts := max(t.policy.Attempts, 1)
	for attempt := 1; ; attempt++ {
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		}
		resp, err := t.inner.RoundTrip(req)
		wait, retry := t.retryable(resp, err, attempt)
		if !retry || !idempotent || attempt >= attempts {
			if retry && err != nil {
				err = fmt.Errorf("%w (%d attempts): %w", errRetriesExhausted, attempt, err)
			}
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		timer := time.NewTimer(wait)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		case <-timer.C:
		}
	}
}

// retryable decides whether to retry, and after how long.
func (t *retryTransport) retryable(resp *http.Response, err error, attempt int) (time.Duration, bool) {
	backoff := t.policy.Base << (attempt - 1)
	if backoff <= 0 || backoff > t.policy.Max {
		backoff = t.policy.Max
	}
	backoff = backoff/2 + rand.N(backoff/2+1)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return 0, false
		}
		var certErr *tls.CertificateVerificationError
		var unknownCA x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		var recordErr tls.RecordHeaderError
		if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &recordErr) {
			return 0, false
		}
		var netErr net.Error
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.ErrUnexpectedEOF) ||
			errors.Is(err, io.EOF) || errors.As(err, &netErr) {
			return backoff, true
		}
		return 0, false
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
			return min(d, t.policy.Max), true
		}
		return backoff, true
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented && resp.StatusCode != http.StatusHTTPVersionNotSupported:
		return backoff, true
	}
	return 0, false
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

// newTransport builds the transport for one TLS setting: the base
// transport with the CA bundle, certificate checks turned off only when
// asked, and the retry policy.
func newTransport(base *http.Transport, pool *x509.CertPool, tlsOpts v1beta1.TLSOptions, policy RetryPolicy) http.RoundTripper {
	t := base.Clone()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.TLSClientConfig != nil {
		cfg = t.TLSClientConfig.Clone()
	}
	if pool != nil {
		cfg.RootCAs = pool
	}
	if tlsOpts.InsecureSkipTLSVerify {
		cfg.InsecureSkipVerify = true //nolint:gosec // the user asked for it with insecureSkipTLSVerify
	}
	t.TLSClientConfig = cfg
	return &retryTransport{inner: t, policy: policy, insecure: tlsOpts.Insecure}
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
