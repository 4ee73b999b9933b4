package faultproxy

import (
	"net/http"
	"testing"
	"time"

	"github.com/kmmkit/kmmkit/reason"
)

// IdleTimeout is the idle timeout the tests give the client, so a stalled
// body fails within seconds.
const IdleTimeout = 2 * time.Second

// Case is a hostile answer and what the user must read about it.
type Case struct {
	Name string
	// TLS puts the proxy in front of the TLS registry with credentials.
	TLS bool
	// Rules make the proxy misbehave for img.
	Rules func(t testing.TB, p *Proxy, img Image) []Rule
	// Setup changes the registry itself (deletes a blob, say).
	Setup func(t testing.TB, p *Proxy, img Image)
	// Reason is the error's reason; reason.ImageNotFound means the check
	// answers "missing" without an error.
	Reason reason.Reason
	// Exit is kmm image check's exit status.
	Exit int
	// Text must all be in the message (the error, or the Missing text).
	Text []string
	// Hidden must not be in it.
	Hidden []string
	// MaxRequests bounds the requests the proxy receives for one check.
	MaxRequests int64
	// MaxTime bounds one check (generously: no speed claim).
	MaxTime time.Duration
}

var html = map[string]string{"Content-Type": "text/html; charset=utf-8"}

// Cases are the hostile answers of issue 17.
func Cases() []Case {
	return []Case{{
		Name:   "redirect loop",
		Rules:  func(testing.TB, *Proxy, Image) []Rule { return []Rule{{Match: Manifests(), Do: RedirectLoop()}} },
		Reason: reason.RegistryError, Exit: 2, Text: []string{"stopped after 10 redirects"},
		MaxRequests: 20, MaxTime: 30 * time.Second,
	}, {
		Name: "stalled body",
		Rules: func(_ testing.TB, p *Proxy, _ Image) []Rule {
			return []Rule{{Match: Manifests(), Do: p.Stall("application/vnd.oci.image.manifest.v1+json")}}
		},
		Reason: reason.RegistryUnavailable, Exit: 2, Text: []string{"no data for 2s"},
		MaxRequests: 5, MaxTime: 30 * time.Second,
	}, {
		Name: "ping 404",
		Rules: func(testing.TB, *Proxy, Image) []Rule {
			return []Rule{{Match: Ping, Do: Status(http.StatusNotFound, html, "<html><body>Not Found</body></html>")}}
		},
		Reason: reason.RegistryError, Exit: 2, Text: []string{"GET /v2/ answered 404 Not Found", "does not speak the registry API"},
		MaxRequests: 5, MaxTime: 30 * time.Second,
	}, {
		Name: "HTML 404",
		Rules: func(testing.TB, *Proxy, Image) []Rule {
			return []Rule{{Match: Manifests(), Do: Status(http.StatusNotFound, html, "<html><body><h1>404</h1>MANIFEST_UNKNOWN</body></html>")}}
		},
		Reason: reason.RegistryError, Exit: 2, Text: []string{"404 Not Found without a registry error code (a text/html body)"},
		MaxRequests: 5, MaxTime: 30 * time.Second,
	}, {
		Name: "5xx with a distribution error body",
		Rules: func(testing.TB, *Proxy, Image) []Rule {
			return []Rule{{Match: Manifests(), Do: Status(http.StatusInternalServerError, map[string]string{"Content-Type": "application/json"},
				`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)}}
		},
		Reason: reason.RegistryUnavailable, Exit: 2, Text: []string{"500 Internal Server Error (after 5 attempts); MANIFEST_UNKNOWN"},
		MaxRequests: 10, MaxTime: 30 * time.Second,
	}, {
		Name: "403 with a distribution error body",
		Rules: func(testing.TB, *Proxy, Image) []Rule {
			return []Rule{{Match: Manifests(), Do: Status(http.StatusForbidden, map[string]string{"Content-Type": "application/json"},
				`{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`)}}
		},
		Reason: reason.Unauthorized, Exit: 2, Text: []string{"403 Forbidden; NAME_UNKNOWN"},
		MaxRequests: 5, MaxTime: 30 * time.Second,
	}, {
		Name: "HTML 200 with a digest header",
		Rules: func(_ testing.TB, _ *Proxy, img Image) []Rule {
			h := map[string]string{"Content-Type": "text/html", "Docker-Content-Digest": img.Digest.String()}
			return []Rule{{Match: Manifests(), Do: Status(http.StatusOK, h, "<html><body>Welcome to nginx!</body></html>")}}
		},
		Reason: reason.RegistryError, Exit: 2, Text: []string{"answered 200 with Content-Type text/html, which is not an image manifest"},
		MaxRequests: 5, MaxTime: 30 * time.Second,
	}, {
		Name:   "missing layer blob",
		Setup:  func(t testing.TB, p *Proxy, img Image) { p.DeleteBlob(t, img, img.Layer) },
		Reason: reason.ImageNotFound, Exit: 1, Text: []string{"layer 1 of 1", "is not in the registry (BLOB_UNKNOWN)"},
		MaxRequests: 8, MaxTime: 30 * time.Second,
	}, {
		Name: "huge manifest, streamed",
		Rules: func(_ testing.TB, p *Proxy, _ Image) []Rule {
			return []Rule{{Match: Manifests(), Do: p.Huge(100<<20, false)}}
		},
		Reason: reason.UnsafeImage, Exit: 2, Text: []string{"more than the 4194304-byte limit"},
		MaxRequests: 5, MaxTime: 30 * time.Second,
	}, {
		Name: "huge manifest, announced",
		Rules: func(_ testing.TB, p *Proxy, _ Image) []Rule {
			return []Rule{{Match: Manifests(), Do: p.Huge(100<<20, true)}}
		},
		Reason: reason.UnsafeImage, Exit: 2, Text: []string{"is 104857600 bytes, more than the 4194304-byte limit"},
		MaxRequests: 5, MaxTime: 30 * time.Second,
	}, {
		Name: "Retry-After 3600",
		Rules: func(testing.TB, *Proxy, Image) []Rule {
			return []Rule{{Match: Manifests(), Do: Status(http.StatusTooManyRequests, map[string]string{"Retry-After": "3600"}, "")}}
		},
		Reason: reason.RegistryUnavailable, Exit: 2, Text: []string{"asked to retry after 1h0m0s", "giving up at once"},
		MaxRequests: 4, MaxTime: 10 * time.Second,
	}, {
		Name: "storage redirect echoing its signature",
		TLS:  true,
		Rules: func(t testing.TB, _ *Proxy, _ Image) []Rule {
			signed, _ := Storage(t, true)
			return []Rule{{Match: Manifests(), Do: Redirect(signed)}}
		},
		Reason: reason.Unauthorized, Exit: 2,
		Text:        []string{"403 Forbidden (from a host the registry redirected to; its body is not shown)"},
		Hidden:      []string{"s3cr3t-signature", "AKIAEXAMPLE", "SignatureDoesNotMatch", "X-Amz"},
		MaxRequests: 8, MaxTime: 30 * time.Second,
	}}
}

// Arrange starts the case's proxy, pushes a fresh image behind it, runs
// Setup, and adds the Rules, with the request count at zero.
func (tc Case) Arrange(t testing.TB) (*Proxy, Image) {
	t.Helper()
	p := Start(t, tc.TLS)
	img := p.Push(t)
	if tc.Setup != nil {
		tc.Setup(t, p, img)
	}
	p.Reset()
	if tc.Rules != nil {
		p.Add(tc.Rules(t, p, img)...)
	}
	return p, img
}
