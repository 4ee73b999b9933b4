package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
)

// auditProxy stands between the operator and the API server, passing
// every request through unchanged (the operator's own token included)
// and writing down what it asked for and what RBAC refused — refusals
// that kmmkit swallows (an unreadable namespace, a build log) included.
type auditProxy struct {
	URL string

	mu      sync.Mutex
	used    map[string]bool // "verb group/resource[/subresource]"
	refused []string
}

// startAuditProxy serves on 127.0.0.1 with a certificate of its own, for
// the API server cfg names.
func startAuditProxy(t *testing.T, cfg *rest.Config, certDir string) *auditProxy {
	t.Helper()
	target, err := url.Parse(cfg.Host)
	require.NoError(t, err)
	tr, err := rest.TransportFor(&rest.Config{Host: cfg.Host, TLSClientConfig: rest.TLSClientConfig{CAFile: cfg.CAFile, CAData: cfg.CAData}})
	require.NoError(t, err)
	p := &auditProxy{used: map[string]bool{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	rp.FlushInterval = -1 // watches stream
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		key := requestKey(resp.Request)
		if key == "" {
			return nil
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.used[key] = true
		if resp.StatusCode == http.StatusForbidden {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			// RBAC's refusals say who cannot do what; Pod Security's
			// and a terminating namespace's do not.
			if err == nil && strings.Contains(string(body), " cannot ") {
				p.refused = append(p.refused, key+": "+string(body))
			}
		}
		return nil
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	require.NoError(t, err)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	srv := &http.Server{Handler: rp}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.URL = "https://" + l.Addr().(*net.TCPAddr).String()
	return p
}

// requestKey names a resource request "verb group/resource[/sub]", with
// Kubernetes's verbs (list and watch for collection GETs), or "" for a
// request that is not about a resource (discovery, version).
func requestKey(r *http.Request) string {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var group string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		group, parts = parts[1], parts[3:]
	default:
		return ""
	}
	if len(parts) > 2 && parts[0] == "namespaces" && parts[2] != "status" && parts[2] != "finalize" {
		parts = parts[2:] // namespaces/<ns>/<resource>/...
	}
	if len(parts) == 0 {
		return ""
	}
	resource, named := parts[0], len(parts) > 1
	if len(parts) > 2 {
		resource += "/" + parts[2]
	}
	var verb string
	switch r.Method {
	case http.MethodGet:
		switch {
		case r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1":
			verb = "watch"
		case named:
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
		if !named {
			verb = "deletecollection"
		}
	default:
		return ""
	}
	return verb + " " + group + "/" + resource
}

// Used returns the requests made, sorted.
func (p *auditProxy) Used() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.used))
	for k := range p.used {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Refused returns RBAC's refusals.
func (p *auditProxy) Refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refused...)
}
