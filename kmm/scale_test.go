package kmm_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

// scaleCluster is 5,000 nodes on 50 kernels and 10 Modules whose images
// all exist, on fakes; nodes come from a lister, as from an informer.
func scaleCluster(b *testing.B) (*kmmtest.Harness, []*v1beta1.Module) {
	ctx := context.Background()
	var nodes []*corev1.Node
	for i := 0; i < 5000; i++ {
		nodes = append(nodes, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%04d", i), Labels: map[string]string{"pool": "gpu"}},
			Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KernelVersion: fmt.Sprintf("6.1.0-%d-amd64", i%50), BootID: "b"}},
		})
	}
	h, err := kmmtest.New(kmm.WithNodeLister(func(context.Context) ([]*corev1.Node, error) { return nodes, nil }))
	if err != nil {
		b.Fatal(err)
	}
	var mods []*v1beta1.Module
	for m := 0; m < 10; m++ {
		mod := &v1beta1.Module{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("mod-%d", m), Namespace: "drivers"},
			Spec: v1beta1.ModuleSpec{
				Selector: map[string]string{"pool": "gpu"},
				ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
					Modprobe:       v1beta1.ModprobeSpec{ModuleName: fmt.Sprintf("drv%d", m)},
					KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: fmt.Sprintf("registry.example.com/mod-%d:${KERNEL_FULL_VERSION}", m)}},
				}},
			},
		}
		for k := 0; k < 50; k++ {
			h.Registry.SetExists(fmt.Sprintf("registry.example.com/mod-%d:6.1.0-%d-amd64", m, k), "sha256:x")
		}
		if err := h.CreateModule(ctx, mod); err != nil {
			b.Fatal(err)
		}
		mods = append(mods, mod)
	}
	return h, mods
}

// pass reconciles every Module once.
func pass(b *testing.B, h *kmmtest.Harness, mods []*v1beta1.Module) {
	for _, m := range mods {
		if _, err := h.Reconcile(context.Background(), m.Namespace, m.Name); err != nil {
			b.Fatal(err)
		}
	}
}

func apiWrites(h *kmmtest.Harness) int {
	return writes(h.Clientset.Actions()) + writes(h.Dynamic.Actions())
}

// BenchmarkReconcileScale measures full passes over 10 Modules on 5,000
// nodes and 50 kernels. It prints the first (loading) pass, and reports
// per steady pass the registry requests (goal: the 500 distinct images,
// not 50,000 node-module pairs) and the API writes (goal: zero).
func BenchmarkReconcileScale(b *testing.B) {
	h, mods := scaleCluster(b)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	pass(b, h, mods)
	first := time.Since(start)
	runtime.ReadMemStats(&after)
	loaded := 0
	for _, m := range mods {
		loaded += len(h.Loader.LoadedOn(m.Namespace, m.Name))
	}
	b.Logf("first pass: %s, %d allocations, %.1f MB allocated, %d registry requests, %d API writes, %d (node, module) loads",
		first.Round(time.Millisecond), after.Mallocs-before.Mallocs, float64(after.TotalAlloc-before.TotalAlloc)/1e6,
		len(h.Registry.Requests()), apiWrites(h), loaded)
	if loaded != 50000 {
		b.Fatalf("loaded %d (node, module) pairs, want 50000", loaded)
	}
	b.ReportAllocs()
	b.ResetTimer()
	requests, writesBefore := len(h.Registry.Requests()), apiWrites(h)
	for i := 0; i < b.N; i++ {
		pass(b, h, mods)
	}
	b.StopTimer()
	b.ReportMetric(float64(len(h.Registry.Requests())-requests)/float64(b.N), "registry-requests/pass")
	b.ReportMetric(float64(apiWrites(h)-writesBefore)/float64(b.N), "api-writes/pass")
	if w := apiWrites(h) - writesBefore; w != 0 {
		b.Fatalf("%d API writes on steady passes, want 0", w)
	}
}

// authRegistry is go-containerregistry's in-process registry behind a
// Basic-auth check, counting every request it receives.
type authRegistry struct {
	host     string
	requests atomic.Int64
}

const regUser, regPass = "puller", "pull-s3cret"

func newAuthRegistry(tb testing.TB) *authRegistry {
	r := &authRegistry{}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if u, p, ok := req.BasicAuth(); !ok || u != regUser || p != regPass {
			w.Header().Set("WWW-Authenticate", `Basic realm="kmmkit-bench"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	tb.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *authRegistry) push(tb testing.TB, repoTag string) {
	img, err := random.Image(256, 1)
	if err != nil {
		tb.Fatal(err)
	}
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: regUser, Password: regPass})); err != nil {
		tb.Fatal(err)
	}
}

// pullSecretCluster is nodes nodes on kernels kernels and one Module whose
// images need imageRepoSecret, checked by the real registry.Client
// against an in-process registry with Basic auth; every image exists.
func pullSecretCluster(tb testing.TB, nodes, kernels int) (*kmmtest.Harness, *v1beta1.Module, *authRegistry) {
	ctx := context.Background()
	reg := newAuthRegistry(tb)
	var list []*corev1.Node
	for i := 0; i < nodes; i++ {
		list = append(list, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%04d", i), Labels: map[string]string{"pool": "nic"}},
			Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KernelVersion: fmt.Sprintf("6.1.0-%d-amd64", i%kernels), BootID: "b"}},
		})
	}
	for k := 0; k < kernels; k++ {
		reg.push(tb, fmt.Sprintf("private/nic:6.1.0-%d-amd64", k))
	}
	client, err := registry.NewClient()
	if err != nil {
		tb.Fatal(err)
	}
	h, err := kmmtest.New(kmm.WithNodeLister(func(context.Context) ([]*corev1.Node, error) { return list, nil }),
		kmm.WithRegistry(client), kmm.WithImageChecker(client))
	if err != nil {
		tb.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.host, base64.StdEncoding.EncodeToString([]byte(regUser+":"+regPass)))
	if _, err := h.Clientset.CoreV1().Secrets("drivers").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: "drivers"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)},
	}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	mod := &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"},
		Spec: v1beta1.ModuleSpec{
			Selector:        map[string]string{"pool": "nic"},
			ImageRepoSecret: &corev1.LocalObjectReference{Name: "pull"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
				RegistryTLS:    v1beta1.TLSOptions{Insecure: true},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: reg.host + "/private/nic:${KERNEL_FULL_VERSION}"}},
			}},
		},
	}
	if err := h.CreateModule(ctx, mod); err != nil {
		tb.Fatal(err)
	}
	reg.requests.Store(0) // the pushes
	return h, mod, reg
}

// BenchmarkReconcileScalePullSecret measures steady passes over a Module
// with imageRepoSecret on 5,000 nodes and 50 kernels, on the real
// registry.Client against an in-process registry with Basic auth: the
// pull secret is read on every pass, and within the cache's TTL a steady
// pass makes no registry request (goal: 0).
func BenchmarkReconcileScalePullSecret(b *testing.B) {
	h, mod, reg := pullSecretCluster(b, 5000, 50)
	start := time.Now()
	if _, err := h.Reconcile(context.Background(), mod.Namespace, mod.Name); err != nil {
		b.Fatal(err)
	}
	loaded := len(h.Loader.LoadedOn(mod.Namespace, mod.Name))
	b.Logf("first pass: %s, %d registry requests for 50 images (a ping, then a manifest GET and two blob HEADs each), %d nodes loaded",
		time.Since(start).Round(time.Millisecond), reg.requests.Load(), loaded)
	if loaded != 5000 {
		b.Fatalf("loaded on %d nodes, want 5000", loaded)
	}
	b.ReportAllocs()
	b.ResetTimer()
	before := reg.requests.Load()
	for i := 0; i < b.N; i++ {
		if _, err := h.Reconcile(context.Background(), mod.Namespace, mod.Name); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	steady := reg.requests.Load() - before
	b.ReportMetric(float64(steady)/float64(b.N), "registry-requests/pass")
	b.Logf("steady passes: %.1f registry requests per pass (goal 0 within the TTL)", float64(steady)/float64(b.N))
	if steady != 0 {
		b.Fatalf("%d registry requests on %d steady passes, want 0", steady, b.N)
	}
}

// TestSteadyPassWithPullSecretMakesNoRegistryRequests: the Reconciler
// reads the pull secret on every pass and so builds a new keychain; the
// Client's cache is keyed by the credentials' content, so a steady pass
// asks the registry nothing.
func TestSteadyPassWithPullSecretMakesNoRegistryRequests(t *testing.T) {
	h, mod, reg := pullSecretCluster(t, 6, 3)
	ctx := context.Background()
	if _, err := h.Reconcile(ctx, mod.Namespace, mod.Name); err != nil {
		t.Fatal(err)
	}
	first := reg.requests.Load()
	if first == 0 {
		t.Fatal("the first pass asked the registry nothing")
	}
	if n := len(h.Loader.LoadedOn(mod.Namespace, mod.Name)); n != 6 {
		t.Fatalf("loaded on %d nodes, want 6", n)
	}
	for pass := 0; pass < 3; pass++ {
		if _, err := h.Reconcile(ctx, mod.Namespace, mod.Name); err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.requests.Load() - first; n != 0 {
		t.Fatalf("%d registry requests on 3 steady passes, want 0", n)
	}
}
