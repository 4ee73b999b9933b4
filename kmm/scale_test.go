package kmm_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
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
