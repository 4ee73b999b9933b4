package faultproxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// Ping matches the registry ping, GET /v2/.
func Ping(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/v2"
}

// Manifests matches manifest requests with one of the methods (any, when
// none is given).
func Manifests(methods ...string) func(*http.Request) bool {
	return pathWith("/manifests/", methods)
}

// Blobs matches blob requests with one of the methods (any, when none is
// given).
func Blobs(methods ...string) func(*http.Request) bool {
	return pathWith("/blobs/", methods)
}

func pathWith(part string, methods []string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		if !strings.Contains(r.URL.Path, part) {
			return false
		}
		if len(methods) == 0 {
			return true
		}
		for _, m := range methods {
			if r.Method == m {
				return true
			}
		}
		return false
	}
}

// Status answers with a status, headers and a body.
func Status(code int, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}
}

// RedirectLoop redirects every request to the same path on the same host,
// forever.
func RedirectLoop() http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", fmt.Sprintf("%s?hop=%d", r.URL.Path, n.Add(1)))
		w.WriteHeader(http.StatusFound)
	}
}

// Redirect redirects to a URL (307, so HEAD stays HEAD).
func Redirect(to string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, to, http.StatusTemporaryRedirect)
	}
}

// Stall sends the headers of a manifest and a few bytes, then nothing
// until the client gives up or the test ends.
func (p *Proxy) Stall(contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, `{"schemaVersion":`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-p.stop:
		}
	}
}

// Huge streams a manifest-typed JSON document of size bytes, with its
// Content-Length when announce is set, without holding it in memory.
func (p *Proxy) Huge(size int64, announce bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		if announce {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		head, tail := `{"schemaVersion":2,"annotations":{"pad":"`, `"}}`
		if _, err := fmt.Fprint(w, head); err != nil {
			return
		}
		chunk := []byte(strings.Repeat("a", 32<<10))
		for left := size - int64(len(head)+len(tail)); left > 0; {
			n := min(left, int64(len(chunk)))
			if _, err := w.Write(chunk[:n]); err != nil {
				return
			}
			left -= n
		}
		fmt.Fprint(w, tail)
	}
}

// Storage starts a second server, as a storage backend the registry
// redirects to with a signed URL: it refuses every request with 403 and
// an XML body that echoes the URL's signature, as S3 does.
func Storage(t testing.TB, useTLS bool) (signedURL, signature string) {
	t.Helper()
	signature = "s3cr3t-signature-do-not-show"
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Signature>%s</Signature><URL>%s</URL></Error>`,
			r.URL.Query().Get("X-Amz-Signature"), r.URL.String())
	}))
	srv.Config.ErrorLog = nilLog()
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv.URL + "/docker/registry/v2/blobs/data?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=" + signature, signature
}
