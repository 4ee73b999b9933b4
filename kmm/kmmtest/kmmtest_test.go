package kmmtest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

func nicSpec() v1beta1.EmbeddedModuleSpec {
	return v1beta1.EmbeddedModuleSpec{
		Selector: map[string]string{"nic": "true"},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
			KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: "registry.example.com/nic:${KERNEL_FULL_VERSION}"}},
		}},
	}
}

// harness returns a harness with two nodes on two kernels, both images
// present, a NICDriver store and its Owners.
func harness(t *testing.T) (*kmmtest.Harness, *drivers, *kmmtest.Owners[*NICDriver]) {
	t.Helper()
	ctx := context.Background()
	h, err := kmmtest.New()
	require.NoError(t, err)
	for node, kernel := range map[string]string{"node-a": "6.1.0-56-amd64", "node-b": "6.1.0-57-amd64"} {
		_, err := h.AddNode(ctx, node, kernel, map[string]string{"nic": "true"})
		require.NoError(t, err)
		h.Registry.SetExists("registry.example.com/nic:"+kernel, "sha256:"+kernel)
	}
	store := &drivers{items: map[string]NICDriver{}}
	nics, err := kmmtest.NewOwners(h, nicDriverOwner(store))
	require.NoError(t, err)
	return h, store, nics
}

var nicOwner = identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}.Owner("drivers", "nic")

func TestRestartReturnsTheNewReconciler(t *testing.T) {
	h, _, nics := harness(t)
	oldHarness, oldOwners := h.Reconciler(), nics.Reconciler()
	r, err := h.RestartWith(kmm.WithUnloadOnTaint(true))
	require.NoError(t, err)
	assert.NotSame(t, oldHarness, r)
	assert.Same(t, r, h.Reconciler(), "Reconciler is the one the restart returned")
	assert.NotSame(t, oldOwners, nics.Reconciler(), "a restart replaces the owners' Reconcilers too")
	assert.NotSame(t, r, nics.Reconciler(), "owners of another identity have their own")

	r2, err := h.Restart()
	require.NoError(t, err)
	assert.Same(t, r2, h.Reconciler())
	assert.NotSame(t, r, r2)
}

func TestOwnersLoadWriteStatusOnlyOnChangeAndRelease(t *testing.T) {
	ctx := context.Background()
	store := &drivers{items: map[string]NICDriver{}}
	h, err := kmmtest.New()
	require.NoError(t, err)
	_, err = h.AddNode(ctx, "node-a", "6.1.0-56-amd64", map[string]string{"nic": "true"})
	require.NoError(t, err)
	h.Registry.SetExists("registry.example.com/nic:6.1.0-56-amd64", "sha256:1")

	owner := nicDriverOwner(store)
	statusWrites, released := 0, 0
	setStatus := owner.SetStatus
	owner.SetStatus = func(ctx context.Context, d *NICDriver, st v1beta1.ModuleStatus) error {
		statusWrites++
		return setStatus(ctx, d, st)
	}
	owner.Release = func(_ context.Context, d *NICDriver) error {
		released++
		store.mu.Lock()
		delete(store.items, d.Namespace+"/"+d.Name)
		store.mu.Unlock()
		return nil
	}
	nics, err := kmmtest.NewOwners(h, owner)
	require.NoError(t, err)
	store.put(&NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers", Generation: 1}, Spec: NICDriverSpec{Module: nicSpec()}})

	_, err = nics.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	d, err := store.get(ctx, "drivers", "nic")
	require.NoError(t, err)
	loaded := meta.FindStatusCondition(d.Status.Module.Conditions, kmm.ConditionLoaded)
	require.NotNil(t, loaded)
	assert.Equal(t, metav1.ConditionTrue, loaded.Status, loaded.Message)
	assert.Contains(t, h.Loader.LoadedFor(nicOwner), "node-a")
	assert.Empty(t, h.Loader.LoadedOn("drivers", "nic"), "nothing is loaded under KMM's identity")

	writes := statusWrites
	require.NotZero(t, writes)
	_, err = nics.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, writes, statusWrites, "a pass that changes nothing writes no status")

	now := metav1.Now()
	d.DeletionTimestamp = &now
	store.put(d)
	res, err := nics.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	assert.True(t, res.Done)
	assert.Equal(t, 1, released)
	assert.Empty(t, h.Loader.LoadedFor(nicOwner))
	_, err = store.get(ctx, "drivers", "nic")
	assert.Error(t, err, "Release removed it")
}

func TestOwnersFailuresReachTheStatus(t *testing.T) {
	ctx := context.Background()
	h, store, nics := harness(t)
	h.FailImage("registry.example.com/nic:6.1.0-57-amd64", reason.TLSError, "x509: certificate signed by unknown authority")
	store.put(&NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers", Generation: 1}, Spec: NICDriverSpec{Module: nicSpec()}})
	_, err := nics.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	d, err := store.get(ctx, "drivers", "nic")
	require.NoError(t, err)
	degraded := meta.FindStatusCondition(d.Status.Module.Conditions, kmm.ConditionDegraded)
	require.NotNil(t, degraded)
	assert.Equal(t, metav1.ConditionTrue, degraded.Status)
	assert.Equal(t, string(reason.TLSError), degraded.Reason)
	assert.Contains(t, degraded.Message, "node-b")
	assert.Contains(t, degraded.Message, "6.1.0-57-amd64")
	assert.Equal(t, int32(2), d.Status.Module.ModuleLoader.DesiredNumber)
	assert.Equal(t, int32(1), d.Status.Module.ModuleLoader.AvailableNumber)
}

func TestOwnersErrors(t *testing.T) {
	ctx := context.Background()
	h, store, _ := harness(t)

	_, err := kmmtest.NewOwners(h, kmmtest.Owner[*NICDriver]{Get: store.get})
	assert.ErrorContains(t, err, "needs Get, Object and SetStatus")
	bad := nicDriverOwner(store)
	bad.Identity = identity.Domain{Name: "nodes.kubernetes.io", Kind: "NICDriver"}
	_, err = kmmtest.NewOwners(h, bad)
	assert.ErrorContains(t, err, "WithIdentity")

	failing := nicDriverOwner(store)
	failing.SetStatus = func(context.Context, *NICDriver, v1beta1.ModuleStatus) error { return errors.New("conflict") }
	nics, err := kmmtest.NewOwners(h, failing)
	require.NoError(t, err)
	store.put(&NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"}, Spec: NICDriverSpec{Module: nicSpec()}})
	_, err = nics.Reconcile(ctx, "drivers", "nic")
	assert.ErrorContains(t, err, "writing the status of drivers/nic: conflict")

	_, err = nics.Reconcile(ctx, "drivers", "absent")
	assert.ErrorContains(t, err, `"absent" not found`)

	// A build that never finishes keeps asking for a quick requeue.
	slow, err := kmmtest.NewOwners(h, nicDriverOwner(store))
	require.NoError(t, err)
	h.Builder.SetPasses(100)
	_, err = h.Clientset.CoreV1().ConfigMaps("drivers").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "nic-build"}, Data: map[string]string{"dockerfile": "FROM scratch\n"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	building := nicSpec()
	building.ModuleLoader.Container.KernelMappings[0].ContainerImage = "registry.example.com/nic-built:${KERNEL_FULL_VERSION}"
	building.ModuleLoader.Container.KernelMappings[0].Build = &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-build"}}
	store.put(&NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"}, Spec: NICDriverSpec{Module: building}})
	_, err = slow.ReconcileUntilStable(ctx, "drivers", "nic", 3)
	assert.ErrorContains(t, err, "NICDriver drivers/nic not stable after 3 passes")
}

// TestOwnersBesideModules drives a KMM Module and a NICDriver of the same
// name on the same nodes: each has its own labels and workers.
func TestOwnersBesideModules(t *testing.T) {
	ctx := context.Background()
	h, store, nics := harness(t)
	store.put(&NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"}, Spec: NICDriverSpec{Module: nicSpec()}})
	spec := nicSpec()
	require.NoError(t, h.CreateModule(ctx, &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"}, Spec: spec.ModuleSpec()}))
	_, err := nics.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	assert.Len(t, h.Loader.LoadedFor(nicOwner), 2)
	assert.Len(t, h.Loader.LoadedOn("drivers", "nic"), 2)

	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	assert.Empty(t, h.Loader.LoadedOn("drivers", "nic"))
	assert.Len(t, h.Loader.LoadedFor(nicOwner), 2, "deleting the Module leaves the NICDriver's module loaded")
}
