package nodecmd

import (
	"crypto/tls"
	"net/http"
)

// insecureTransport skips certificate checks, for pushing test images.
func insecureTransport() http.RoundTripper {
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test only
}
