package fleetbench

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestVerbResource(t *testing.T) {
	for _, tc := range []struct{ method, url, want string }{
		{"GET", "/api/v1/nodes", "list nodes"},
		{"GET", "/api/v1/nodes?watch=true&resourceVersion=5", "watch nodes"},
		{"GET", "/api/v1/nodes/n1", "get nodes"},
		{"PATCH", "/api/v1/nodes/n1", "patch nodes"},
		{"PATCH", "/api/v1/nodes/n1/status", "patch nodes/status"},
		{"POST", "/api/v1/namespaces/ns/pods", "create pods"},
		{"DELETE", "/api/v1/namespaces/ns/pods/w", "delete pods"},
		{"DELETE", "/api/v1/namespaces/ns/pods", "deletecollection pods"},
		{"PUT", "/api/v1/namespaces/ns/pods/w/status", "update pods/status"},
		{"GET", "/api/v1/namespaces/ns/secrets/pull", "get secrets"},
		{"GET", "/api/v1/namespaces/ns", "get namespaces"},
		{"POST", "/api/v1/namespaces", "create namespaces"},
		{"PUT", "/apis/kmm.sigs.x-k8s.io/v1beta1/namespaces/ns/modules/m/status", "update modules/status"},
		{"GET", "/apis/kmm.sigs.x-k8s.io/v1beta1/namespaces/ns/modules", "list modules"},
		{"GET", "/version", "get /version"},
	} {
		if got := verbResource(httptest.NewRequest(tc.method, tc.url, nil)); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}

func TestCounts(t *testing.T) {
	c := NewRequests()
	rt := c.Wrap(roundTripper(func(*http.Request) (*http.Response, error) { return &http.Response{StatusCode: 200}, nil }))
	before := c.Snapshot()
	for _, r := range []struct{ method, url string }{
		{"POST", "/api/v1/namespaces/ns/pods"}, {"DELETE", "/api/v1/namespaces/ns/pods/w"},
		{"PATCH", "/api/v1/nodes/n1"}, {"PUT", "/apis/kmm.sigs.x-k8s.io/v1beta1/namespaces/ns/modules/m/status"},
		{"GET", "/api/v1/nodes/n1"}, {"GET", "/api/v1/nodes/n2"},
	} {
		if _, err := rt.RoundTrip(httptest.NewRequest(r.method, r.url, nil)); err != nil {
			t.Fatal(err)
		}
	}
	d := c.Snapshot().Sub(before)
	if d.Writes() != 4 || d.WritesOn("pods") != 2 || d.WritesOn("modules") != 1 || d.Verb("get") != 2 || d.Total() != 6 {
		t.Errorf("counts %s: writes %d, on pods %d, on modules %d, gets %d", d, d.Writes(), d.WritesOn("pods"), d.WritesOn("modules"), d.Verb("get"))
	}
	if s := d.String(); s != "create pods=1, delete pods=1, get nodes=2, patch nodes=1, update modules/status=1" {
		t.Errorf("String() = %q", s)
	}
}
