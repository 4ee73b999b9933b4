package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Reason classifies a failed registry call.
type Reason string

// The reasons a check can fail for.
const (
	// ReasonUnauthorized: the registry refused the credentials, or asked
	// for some and none were given.
	ReasonUnauthorized Reason = "Unauthorized"
	// ReasonTLS: the TLS handshake failed (unknown CA, wrong host name,
	// HTTP spoken to an HTTPS server or the reverse).
	ReasonTLS Reason = "TLSError"
	// ReasonUnavailable: the registry could not be reached or kept
	// failing (connection refused, timeouts, 5xx, 429) after retries.
	ReasonUnavailable Reason = "RegistryUnavailable"
	// ReasonInvalid: the image reference is malformed.
	ReasonInvalid Reason = "InvalidReference"
	// ReasonNotFound: the image is not in the registry, when an operation
	// (such as Extract) needs it to be. Check reports a missing image as a
	// Result instead.
	ReasonNotFound Reason = "NotFound"
	// ReasonUnknown: anything else the registry answered.
	ReasonUnknown Reason = "RegistryError"
)

// Error is a failed registry call on one image.
type Error struct {
	// Reason classifies the failure.
	Reason Reason
	// Image is the reference that was checked.
	Image string
	// Detail says what to do about it, when there is something to say,
	// such as which pull secret was used.
	Detail string
	// Err is the underlying error.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Image, e.Reason)
	if e.Detail != "" {
		b.WriteString(" (" + e.Detail + ")")
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of an error from this package, or "" for
// other errors.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// IsUnauthorized reports whether err is a refused or missing credential.
func IsUnauthorized(err error) bool { return ReasonOf(err) == ReasonUnauthorized }

// IsTLS reports whether err is a TLS failure.
func IsTLS(err error) bool { return ReasonOf(err) == ReasonTLS }

// IsUnavailable reports whether err means the registry could not answer.
func IsUnavailable(err error) bool { return ReasonOf(err) == ReasonUnavailable }

// notFound reports whether err is a registry's definite "no such
// manifest, tag or repository".
func notFound(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	if te.StatusCode == http.StatusNotFound {
		return true
	}
	for _, d := range te.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
			return true
		}
	}
	return false
}

// classify turns a failed call into an *Error.
func classify(image string, err error, auth AuthInfo) *Error {
	e := &Error{Image: image, Err: err, Reason: ReasonUnknown}
	var te *transport.Error
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recordErr tls.RecordHeaderError
	var netErr net.Error
	// The order matters: go-containerregistry may report an HTTPS failure
	// and the refused plain-HTTP fallback together, and url.Error is a
	// net.Error whatever it wraps.
	switch {
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden),
		errors.As(err, &te) && hasCode(te, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
		e.Reason = ReasonUnauthorized
	case errors.As(err, &te) && (te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, errRetriesExhausted):
		e.Reason = ReasonUnavailable
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &recordErr),
		errors.Is(err, errPlainHTTP),
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"),
		strings.Contains(err.Error(), "Client sent an HTTP request to an HTTPS server"):
		e.Reason = ReasonTLS
		e.Detail = "check registryTLS (insecure, insecureSkipTLSVerify) and the CA bundle"
	case errors.As(err, &netErr):
		e.Reason = ReasonUnavailable
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
