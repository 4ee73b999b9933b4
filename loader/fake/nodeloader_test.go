package fake_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/loader/fake"
	"github.com/kmmkit/kmmkit/reason"
)

func nodes(names ...string) []*corev1.Node {
	var out []*corev1.Node
	for _, n := range names {
		out = append(out, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return out
}

func want(image string) *loader.PodRequest {
	return &loader.PodRequest{Config: v1beta1.ModuleConfig{KernelVersion: "6.1.0-56-amd64", ContainerImage: image,
		Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic"}}}
}

func TestNodeLoader(t *testing.T) {
	ctx := context.Background()
	f := fake.NewNodeLoader()
	f.SetDelay(1)
	req := loader.SyncRequest{Namespace: "drivers", Module: "nic", Nodes: nodes("a", "b"),
		Desired: map[string]*loader.PodRequest{"a": want("img:v1"), "b": want("img:v1")}}
	st, err := f.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, loader.PhaseLoading, st[0].Phase, "a delay of one pass")
	f.Fail("b", "drivers", "nic", reason.WorkerImagePullFailed, "no such image")
	st, err = f.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, loader.PhaseLoaded, st[0].Phase)
	assert.Equal(t, loader.PhaseFailed, st[1].Phase)
	assert.Equal(t, string(reason.WorkerImagePullFailed), st[1].Condition.Reason)
	f.Recover("b", "drivers", "nic")
	f.SetDelay(0)
	f.FailSync(errors.New("listing worker pods: the server is unavailable"))
	st, err = f.Sync(ctx, req)
	require.EqualError(t, err, "listing worker pods: the server is unavailable")
	assert.Empty(t, st)
	assert.Len(t, f.LoadedOn("drivers", "nic"), 1, "nothing changes while Sync fails")
	f.FailSync(nil)
	_, err = f.Sync(ctx, req)
	require.NoError(t, err)
	assert.Len(t, f.LoadedOn("drivers", "nic"), 2)

	// A new image replaces the old one; dropping a node unloads it.
	req.Desired = map[string]*loader.PodRequest{"a": want("img:v2")}
	st, err = f.Sync(ctx, req)
	require.NoError(t, err)
	require.Len(t, st, 2)
	assert.Equal(t, loader.PhaseUnloaded, st[1].Phase)
	assert.Equal(t, map[string]v1beta1.ModuleConfig{"a": want("img:v2").Config}, f.LoadedOn("drivers", "nic"))
	assert.Equal(t, []string{
		"load drivers/nic on a (img:v1)", "load drivers/nic on b (img:v1)",
		"unload drivers/nic from a", "load drivers/nic on a (img:v2)", "unload drivers/nic from b",
	}, f.History())

	req.Desired = map[string]*loader.PodRequest{"gone": want("img:v2")}
	_, err = f.Sync(ctx, req)
	assert.ErrorContains(t, err, `desired node "gone"`)
	f.Reboot("a")
	assert.Empty(t, f.LoadedOn("drivers", "nic"))
}

// TestNodeLoaderIdentities: KMM's Module nic, an operator's NICDriver nic
// in the same namespace and a cluster-scoped one are kept apart.
func TestNodeLoaderIdentities(t *testing.T) {
	ctx := context.Background()
	f := fake.NewNodeLoader()
	acme := identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
	cluster := identity.Domain{Name: "nic.acme.io", Kind: "NICFleet"}
	for _, req := range []loader.SyncRequest{
		{Namespace: "drivers", Module: "nic", Nodes: nodes("a"), Desired: map[string]*loader.PodRequest{"a": want("kmm:v1")}},
		{Namespace: "drivers", Module: "nic", Identity: acme, Nodes: nodes("a"), Desired: map[string]*loader.PodRequest{"a": want("acme:v1")}},
		{Module: "nic", Identity: cluster, PodNamespace: "acme-system", Nodes: nodes("a"), Desired: map[string]*loader.PodRequest{"a": want("fleet:v1")}},
	} {
		_, err := f.Sync(ctx, req)
		require.NoError(t, err)
	}
	assert.Equal(t, "kmm:v1", f.LoadedOn("drivers", "nic")["a"].ContainerImage)
	assert.Equal(t, "acme:v1", f.LoadedFor(acme.Owner("drivers", "nic"))["a"].ContainerImage)
	assert.Equal(t, "fleet:v1", f.LoadedFor(cluster.Owner("", "nic"))["a"].ContainerImage)
	// Unloading the operator's leaves KMM's alone.
	_, err := f.Sync(ctx, loader.SyncRequest{Namespace: "drivers", Module: "nic", Identity: acme, Nodes: nodes("a")})
	require.NoError(t, err)
	assert.Empty(t, f.LoadedFor(acme.Owner("drivers", "nic")))
	assert.Len(t, f.LoadedOn("drivers", "nic"), 1)
	assert.Contains(t, f.History(), "unload NICDriver drivers/nic from a")
	_, err = f.Sync(ctx, loader.SyncRequest{Module: "nic", Identity: cluster, Nodes: nodes("a")})
	assert.ErrorContains(t, err, "needs a PodNamespace")
}

// A unit test of code that loads modules on nodes uses fake.NodeLoader
// where production code uses loader.PodLoader.
func ExampleNodeLoader() {
	f := fake.NewNodeLoader()
	req := loader.SyncRequest{Namespace: "drivers", Module: "nic", Nodes: nodes("worker-1"),
		Desired: map[string]*loader.PodRequest{"worker-1": want("registry.example.com/nic:6.1.0-56-amd64")}}
	states, _ := f.Sync(context.Background(), req)
	fmt.Println(states[0].Node, states[0].Phase)
	fmt.Println(f.History()[0])
	// Output:
	// worker-1 Loaded
	// load drivers/nic on worker-1 (registry.example.com/nic:6.1.0-56-amd64)
}
