package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kmmkit/kmmkit/reason"
)

// Reason classifies a failed registry call. It is the shared vocabulary
// of package reason.
type Reason = reason.Reason

// The reasons a registry call fails for, in package reason's vocabulary.
const (
	// ReasonUnauthorized is reason.Unauthorized.
	ReasonUnauthorized = reason.Unauthorized
	// ReasonTLS is reason.TLSError.
	ReasonTLS = reason.TLSError
	// ReasonUnavailable is reason.RegistryUnavailable.
	ReasonUnavailable = reason.RegistryUnavailable
	// ReasonInvalid is reason.InvalidReference.
	ReasonInvalid = reason.InvalidReference
	// ReasonNotFound is reason.ImageNotFound: the image is not in the
	// registry, when an operation (such as Extract) needs it to be. Check
	// reports a missing image as a Result instead.
	ReasonNotFound = reason.ImageNotFound
	// ReasonUnknown is reason.RegistryError: anything else a registry, or
	// something that is not one, answered.
	ReasonUnknown = reason.RegistryError
)

// Error is a failed registry call on one image.
type Error struct {
	// Reason classifies the failure.
	Reason Reason
	// Image is the reference that was checked.
	Image string
	// Detail says what went wrong in the user's terms and what to do about
	// it, such as which pull secret was used.
	Detail string
	// Err is the underlying error.
	Err error
}

var _ reason.Carrier = (*Error)(nil)

// Error implements error. The text never holds a response body from a
// host the registry redirected to, a query string or a credential.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Image, e.Reason)
	if e.Detail != "" {
		b.WriteString(" (" + e.Detail + ")")
	}
	if e.Err != nil {
		b.WriteString(": " + safeText(e.Err))
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf implements reason.Carrier.
func (e *Error) ReasonOf() reason.Reason { return e.Reason }

// ReasonOf returns the Reason of an error from this package, or "" for
// other errors.
//
// Deprecated: use reason.Of, which also knows the other packages' errors.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// IsUnauthorized reports whether err is a refused or missing credential.
func IsUnauthorized(err error) bool { return reason.Of(err) == ReasonUnauthorized }

// IsTLS reports whether err is a TLS failure.
func IsTLS(err error) bool { return reason.Of(err) == ReasonTLS }

// IsUnavailable reports whether err means the registry could not answer.
func IsUnavailable(err error) bool { return reason.Of(err) == ReasonUnavailable }

// notFound reports whether err is a registry's definite "no such
// manifest, tag or repository": a 404 carrying MANIFEST_UNKNOWN or
// NAME_UNKNOWN, from a host that answered GET /v2/ as a registry, not
// after a redirect. Anything else (an HTML 404, a 404 from a web server,
// a 5xx with such a code) is not an answer about the image.
func notFound(err error) bool {
	return definite404(err, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode)
}

// blobNotFound is notFound for a blob (BLOB_UNKNOWN).
func blobNotFound(err error) bool {
	return definite404(err, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode)
}

func definite404(err error, codes ...transport.ErrorCode) bool {
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound || !hasCode(te, codes...) {
		return false
	}
	a := answerOf(te)
	return a != nil && a.proven && !a.redirected
}

// isStatus reports whether err is an HTTP answer with one of the codes.
func isStatus(err error, codes ...int) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	for _, c := range codes {
		if te.StatusCode == c {
			return true
		}
	}
	return false
}

// classify turns a failed call into an *Error whose Reason says whose
// fault it is.
func classify(image string, err error, auth AuthInfo) *Error {
	e := &Error{Image: image, Err: err, Reason: ReasonUnknown}
	var te *transport.Error
	hasTE := errors.As(err, &te)
	var (
		certErr   *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		recordErr tls.RecordHeaderError
		netErr    net.Error
		raErr     *retryAfterError
		redirErr  *redirectError
		bigErr    *tooLargeError
		idleErr   *idleError
		dlErr     *deadlineError
	)
	// The order matters: go-containerregistry may report an HTTPS failure
	// and the refused plain-HTTP fallback together, url.Error is a
	// net.Error whatever it wraps, and so is fs.PathError.
	switch {
	case errors.As(err, &raErr), errors.As(err, &idleErr), errors.As(err, &dlErr):
		e.Reason = ReasonUnavailable
	case errors.Is(err, context.DeadlineExceeded): // the caller's deadline, or a transport timeout
		e.Reason = ReasonUnavailable
	case errors.As(err, &redirErr):
		e.Reason = ReasonUnknown
	case errors.As(err, &bigErr):
		e.Reason = reason.UnsafeImage
	case hasTE && isPing(te) && te.StatusCode != http.StatusUnauthorized && te.StatusCode != http.StatusForbidden &&
		te.StatusCode < 500 && te.StatusCode != http.StatusTooManyRequests:
		e.Reason = ReasonUnknown
		e.Detail = fmt.Sprintf("GET /v2/ answered %d %s: this host does not speak the registry API (check the host, the port and any proxy in between)",
			te.StatusCode, http.StatusText(te.StatusCode))
	case hasTE && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden),
		hasTE && hasCode(te, transport.UnauthorizedErrorCode, transport.DeniedErrorCode) && te.StatusCode < 500:
		e.Reason = ReasonUnauthorized
	case hasTE && (te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, errRetriesExhausted):
		e.Reason = ReasonUnavailable
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &recordErr),
		errors.Is(err, errPlainHTTP),
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"),
		strings.Contains(err.Error(), "Client sent an HTTP request to an HTTPS server"):
		e.Reason = ReasonTLS
		e.Detail = "check registryTLS (insecure, insecureSkipTLSVerify) and the CA bundle"
	case localIO(err):
		e.Reason = reason.LocalIOError
		e.Detail = "a local file operation failed; the registry is not at fault"
	case errors.As(err, &netErr):
		e.Reason = ReasonUnavailable
	case hasTE && te.StatusCode == http.StatusNotFound:
		e.Detail = not404Detail(te)
	}
	if e.Reason == ReasonUnauthorized {
		if len(auth.Secrets) == 0 {
			e.Detail = "no pull secret was given: set imageRepoSecret"
		} else {
			e.Detail = "used pull secret " + strings.Join(auth.Secrets, ", ")
		}
	}
	return e
}

// not404Detail says why a 404 was not taken for "the image is missing".
func not404Detail(te *transport.Error) string {
	a := answerOf(te)
	switch {
	case a != nil && a.redirected:
		return "404 Not Found after a redirect away from the registry: not taken as a missing image"
	case !hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode):
		ct := ""
		if a != nil && a.contentType != "" {
			ct = " (a " + a.contentType + " body)"
		}
		return "404 Not Found without a registry error code" + ct + ": not a registry's answer, so the image is not taken as missing"
	default:
		return "the host did not answer GET /v2/ as a registry, so its 404 is not taken as a missing image"
	}
}

// isPing reports whether te answers the registry ping, GET /v2/.
func isPing(te *transport.Error) bool {
	return te.Request != nil && te.Request.URL != nil && strings.TrimSuffix(te.Request.URL.Path, "/") == "/v2"
}

// localIO reports a failure of the local file system rather than of the
// network: fs.PathError, os.LinkError, os.SyscallError or a bare errno,
// not inside a network error.
func localIO(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var urlErr *url.Error
	if errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &urlErr) {
		return false
	}
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	var sysErr *os.SyscallError
	if errors.As(err, &pathErr) || errors.As(err, &linkErr) || errors.As(err, &sysErr) {
		return true
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT,
			syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ENETDOWN:
			return false
		}
		return true
	}
	return false
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// maxErrorText bounds the underlying error's text in a message.
const maxErrorText = 1024

// safeText is err's text with every registry answer described by us
// (status, the registry's error codes and messages; never a raw body, and
// nothing from a host the registry redirected to), URLs without query
// strings or user info, and bounded in length.
func safeText(err error) string {
	s := err.Error()
	var te *transport.Error
	if errors.As(err, &te) {
		s = strings.ReplaceAll(s, te.Error(), describe(te))
	}
	s = redactURLs(s)
	if len(s) > maxErrorText {
		s = s[:maxErrorText] + "…"
	}
	return s
}

// describe renders a registry answer without its raw body.
func describe(te *transport.Error) string {
	var b strings.Builder
	if te.Request != nil && te.Request.URL != nil {
		fmt.Fprintf(&b, "%s %s: ", te.Request.Method, plainURL(te.Request.URL))
	}
	fmt.Fprintf(&b, "%d %s", te.StatusCode, http.StatusText(te.StatusCode))
	a := answerOf(te)
	if a != nil && a.redirected {
		b.WriteString(" (from a host the registry redirected to; its body is not shown)")
		return b.String()
	}
	if a != nil && a.attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", a.attempts)
	}
	for i, d := range te.Errors {
		if i == 3 {
			b.WriteString("; …")
			break
		}
		msg := d.Message
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		fmt.Fprintf(&b, "; %s: %s", d.Code, msg)
	}
	if len(te.Errors) == 0 && a != nil && a.contentType != "" && te.Request != nil && te.Request.Method != http.MethodHead {
		fmt.Fprintf(&b, "; the body (%s) is not a registry error", a.contentType)
	}
	return b.String()
}

// plainURL is u without user info, query or fragment.
func plainURL(u *url.URL) string {
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return c.String()
}

var urlPattern = regexp.MustCompile(`(?i)\b(https?://)(?:[^/\s"'@]*@)?([^\s"'?#]*)(\?[^\s"'#]*)?`)

// redactURLs removes user info and query strings from URLs in s.
func redactURLs(s string) string {
	return urlPattern.ReplaceAllStringFunc(s, func(m string) string {
		sub := urlPattern.FindStringSubmatch(m)
		out := sub[1] + sub[2]
		if sub[3] != "" {
			out += "?[redacted]"
		}
		return out
	})
}
