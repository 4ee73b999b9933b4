// Package fleetbench measures kmmkit at fleet scale on a real
// kube-apiserver and a real registry: a driver creates the nodes, the
// Modules and their images and plays the kubelet for worker Pods; a
// Controller runs the Reconciler and the PodLoader on shared informers, as
// an operator does, and counts every API and registry request it makes.
// `make bench-fleet` runs it at 5,000 nodes (hack/benchfleet), with the
// Controller in a child process so that its memory is its own; a test
// runs it at 500 nodes and asserts the counts.
package fleetbench

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Requests counts API requests by verb and resource: a RoundTripper for
// rest.Config.Wrap.
type Requests struct {
	mu     sync.Mutex
	counts map[string]int64 // "verb resource"
}

// NewRequests returns an empty counter.
func NewRequests() *Requests { return &Requests{counts: map[string]int64{}} }

// Wrap returns rt counting every request through it.
func (c *Requests) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		c.add(verbResource(req))
		return rt.RoundTrip(req)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *Requests) add(key string) {
	c.mu.Lock()
	c.counts[key]++
	c.mu.Unlock()
}

// Snapshot returns the counts so far.
func (c *Requests) Snapshot() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(Counts, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// Counts are request counts by "verb resource" (verb as Kubernetes names
// it: get, list, watch, create, update, patch, delete, deletecollection).
type Counts map[string]int64

// Sub returns c minus before.
func (c Counts) Sub(before Counts) Counts {
	out := Counts{}
	for k, v := range c {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// Verb sums the counts of verb over every resource.
func (c Counts) Verb(verb string) int64 {
	var n int64
	for k, v := range c {
		if strings.HasPrefix(k, verb+" ") {
			n += v
		}
	}
	return n
}

// Writes sums creates, updates, patches and deletes.
func (c Counts) Writes() int64 {
	return c.Verb("create") + c.Verb("update") + c.Verb("patch") + c.Verb("delete") + c.Verb("deletecollection")
}

// WritesOn sums the writes on resource and its subresources
// ("modules" counts "modules/status" too).
func (c Counts) WritesOn(resource string) int64 {
	var n int64
	for k, v := range c {
		verb, res, _ := strings.Cut(k, " ")
		switch verb {
		case "create", "update", "patch", "delete", "deletecollection":
			if res == resource || strings.HasPrefix(res, resource+"/") {
				n += v
			}
		}
	}
	return n
}

// Total sums every count.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// String lists the counts in order, "verb resource=n", comma separated.
func (c Counts) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.FormatInt(c[k], 10)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// verbResource names a request to the API server as "verb resource",
// resource with its subresource ("pods/status").
func verbResource(req *http.Request) string {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	// /api/v1/..., /apis/group/version/...
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return strings.ToLower(req.Method) + " " + req.URL.Path // discovery, /version
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) != 2 {
		parts = parts[2:] // namespaced resource (not the namespace itself)
	}
	resource, named := "", false
	switch len(parts) {
	case 0:
	case 1:
		resource = parts[0]
	case 2:
		resource, named = parts[0], true
	default:
		resource, named = parts[0]+"/"+parts[2], true
	}
	verb := ""
	switch req.Method {
	case http.MethodGet:
		switch {
		case req.URL.Query().Get("watch") == "true" || req.URL.Query().Get("watch") == "1":
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
		verb = strings.ToLower(req.Method)
	}
	return verb + " " + resource
}

// RegistryRequests counts the HTTP requests a registry.Client sends, with
// the transport it gives (registry.WithBaseTransport): the transport asks
// its Proxy function once for every HTTP/1.1 request it sends, and this
// one counts and names no proxy. HTTP/2 is off (requests on an HTTP/2
// connection would bypass the count).
type RegistryRequests struct{ n atomic.Int64 }

// Transport returns base (cloned) counting every request through it.
func (c *RegistryRequests) Transport(base *http.Transport) *http.Transport {
	t := base.Clone()
	t.ForceAttemptHTTP2 = false
	// Not the base's TLS settings: a used http.DefaultTransport's offer h2.
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	t.Proxy = func(*http.Request) (*url.URL, error) {
		c.n.Add(1)
		return nil, nil
	}
	return t
}

// Load returns the number of requests so far.
func (c *RegistryRequests) Load() int64 { return c.n.Load() }
