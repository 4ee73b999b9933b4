package kmm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
)

// clusterState is what a pass must not touch when the spec is invalid:
// the nodes (labels, annotations), the Pods and what the fakes did.
type clusterState struct {
	nodes    []corev1.Node
	pods     []corev1.Pod
	builds   int
	checks   int
	signs    int
	loaded   map[string]v1beta1.ModuleConfig
	loadSync int
}

func snapshot(t *testing.T, h *kmmtest.Harness) clusterState {
	t.Helper()
	ctx := context.Background()
	nodes, err := h.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	pods, err := h.Clientset.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	return clusterState{nodes: nodes.Items, pods: pods.Items, builds: len(h.Builder.Started()), checks: len(h.Registry.Requests()),
		signs: len(h.Signer.Requests()), loaded: h.Loader.LoadedOn("drivers", "nic"), loadSync: h.Loader.Syncs()}
}

// invalidModule has no moduleName and no selector: Validate refuses it
// with two errors. Acted on, it would build and load on every node.
func invalidModule() *v1beta1.Module {
	m := nicModule()
	m.Spec.ModuleLoader.Container.Modprobe.ModuleName = ""
	m.Spec.Selector = nil
	return m
}

// TestInvalidNewModuleChangesNothing: with worker Pods (a PodLoader on
// the fake clientset), an invalid Module gets a status naming every
// error, one event, and nothing else: no finalizer, no build, no registry
// call, no Pod, no node label or annotation.
func TestInvalidNewModuleChangesNothing(t *testing.T) {
	ctx := context.Background()
	h := podLoaderCluster(t)
	require.NoError(t, h.CreateModule(ctx, invalidModule()))
	before, writes := snapshot(t, h), len(h.Writes())
	for range 3 {
		res, err := h.Reconcile(ctx, "drivers", "nic")
		require.NoError(t, err, "an invalid spec is reported in the status, not retried as an error")
		assert.Zero(t, res.RequeueAfter, "a spec change brings the next pass")
		assert.False(t, res.Done)
	}
	assert.Equal(t, before, snapshot(t, h))
	assert.Equal(t, []string{"update modules/status drivers/nic"}, h.Writes()[writes:], "only the status is written, once")

	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Empty(t, m.Finalizers)
	errs := v1beta1.Validate(invalidModule())
	require.GreaterOrEqual(t, len(errs), 2)
	msg := expectedErrors(errs)
	assert.Contains(t, msg, "spec.selector: Required value")
	assert.Contains(t, msg, "spec.moduleLoader.container.modprobe.")
	assertCond(t, m, kmm.ConditionValid, metav1.ConditionFalse, reason.InvalidSpec, msg)
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, reason.InvalidSpec, "nothing was changed in the cluster", msg)
	assert.Nil(t, m.Status.ModuleLoader)
	assert.Empty(t, m.Status.Kernels)
	ev := h.Events()
	require.Len(t, ev, 1)
	assert.True(t, strings.HasPrefix(ev[0], "Warning InvalidSpec "+msg), ev[0])

	// Fixed, it is acted on: a finalizer, worker Pods.
	m.Spec = nicModule().Spec
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	settle(t, h)
	m, err = h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Contains(t, m.Finalizers, kmm.Finalizer)
	assertCond(t, m, kmm.ConditionValid, metav1.ConditionTrue, reason.Valid)
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionFalse, reason.AsExpected)
	n3, err := h.Clientset.CoreV1().Nodes().Get(ctx, "n3", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, n3.Labels, loader.ReadyLabel("drivers", "nic"))
}

// TestInvalidNewModuleDeletion: an invalid Module that was never valid
// holds no finalizer, so it is deleted at once.
func TestInvalidNewModuleDeletion(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	require.NoError(t, h.CreateModule(ctx, invalidModule()))
	_, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	_, err = h.Module(ctx, "drivers", "nic")
	assert.Error(t, err, "gone")
	assert.Zero(t, h.Loader.Syncs())
}

// TestInvalidUpdateKeepsNodes: a loaded Module whose spec becomes invalid
// (here: no selector, which would target every node) keeps every node as
// it is; nothing is loaded on the node the old selector left out, and
// nothing is unloaded. Deleting it then still unloads everywhere.
func TestInvalidUpdateKeepsNodes(t *testing.T) {
	ctx := context.Background()
	h := podLoaderCluster(t)
	h.Registry.SetExists(img57, "sha256:57")
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	settle(t, h)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	loadedBefore := cond(t, m, kmm.ConditionLoaded)
	require.Equal(t, metav1.ConditionTrue, loadedBefore.Status)

	m.Spec.Selector = nil
	m.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = "registry.example.com/nic" // no tag
	m.Generation = 2
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	before, writes := snapshot(t, h), len(h.Writes())
	settle(t, h)
	assert.Equal(t, before, snapshot(t, h), "no node label, annotation or Pod changed")
	assert.Equal(t, []string{"update modules/status drivers/nic"}, h.Writes()[writes:])
	m, err = h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assertCond(t, m, kmm.ConditionValid, metav1.ConditionFalse, reason.InvalidSpec,
		"spec.selector: Required value", `spec.moduleLoader.container.kernelMappings[0].containerImage: Invalid value: "registry.example.com/nic"`)
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, reason.InvalidSpec)
	assert.Equal(t, loadedBefore, cond(t, m, kmm.ConditionLoaded), "Loaded still describes generation 1")
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 3}, m.Status.ModuleLoader)

	// Deleted while invalid: every node unloads, then the finalizer goes.
	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	for i := 0; i < 10; i++ {
		if _, err := h.Module(ctx, "drivers", "nic"); err != nil {
			break
		}
		_, err := h.Reconcile(ctx, "drivers", "nic")
		require.NoError(t, err)
		kubelet(t, h)
	}
	_, err = h.Module(ctx, "drivers", "nic")
	require.Error(t, err, "the Module is gone once every node unloaded")
	nodes, err := h.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, n := range nodes.Items {
		assert.NotContains(t, n.Annotations, loader.ObservedAnnotation("drivers", "nic"), n.Name)
		assert.NotContains(t, n.Labels, loader.ReadyLabel("drivers", "nic"), n.Name)
	}
}

// TestInvalidEmbeddedSpec: an operator's own resource, embedding the spec
// at spec.module with no webhook in front of it: the messages use its
// path, and nothing is built or loaded.
func TestInvalidEmbeddedSpec(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	obj := kmm.Object{Namespace: "drivers", Name: "nic", Spec: invalidModule().Spec, Generation: 3,
		SpecPath: field.NewPath("spec", "module"), Ref: &corev1.ObjectReference{Kind: "NICDriver", Namespace: "drivers", Name: "nic"}}
	before := snapshot(t, h)
	res, err := h.Reconciler().ReconcileSpec(ctx, obj)
	require.NoError(t, err)
	assert.Equal(t, before, snapshot(t, h))
	m := &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Generation: 3}, Status: res.Status}
	errs := v1beta1.ValidateSpec(&obj.Spec, field.NewPath("spec", "module"))
	assertCond(t, m, kmm.ConditionValid, metav1.ConditionFalse, reason.InvalidSpec, expectedErrors(errs),
		"spec.module.selector: Required value", "spec.module.moduleLoader.container.modprobe.")
	assert.NotContains(t, cond(t, m, kmm.ConditionValid).Message, "spec.selector")

	// The same pass again emits no second event.
	obj.Status = res.Status
	res2, err := h.Reconciler().ReconcileSpec(ctx, obj)
	require.NoError(t, err)
	assert.Equal(t, res.Status, res2.Status)
	assert.Len(t, h.Events(), 1)

	// Deleting: finished although the spec is invalid.
	obj.Deleting = true
	res, err = h.Reconciler().ReconcileSpec(ctx, obj)
	require.NoError(t, err)
	assert.True(t, res.Done)
}

// expectedErrors is how the Valid condition lists errs: every one, with
// its field path.
func expectedErrors(errs field.ErrorList) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return fmt.Sprintf("%d error(s): %s", len(errs), strings.Join(parts, "; "))
}

// TestDRAVersionGate: the Reconciler validates with the API server's
// version, so spec.dra on a cluster older than Kubernetes 1.34 is refused
// as KMM's webhook refuses it; on 1.34 the gate passes, and only kmmkit's
// own refusal (it runs no DRA driver, v1beta1.WithoutDRA) remains.
func TestDRAVersionGate(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		version    string
		gatePasses bool
	}{{"v1.33.4", false}, {"v1.34.0", true}} {
		t.Run(tc.version, func(t *testing.T) {
			h := cluster(t)
			h.Clientset.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: tc.version}
			m := nicModule()
			m.Spec.DRA = &v1beta1.DRASpec{DriverName: "gpu.example.com", Container: v1beta1.CommonContainerSpec{Image: "dra:v1"}}
			require.NoError(t, h.CreateModule(ctx, m))
			_, err := h.Reconcile(ctx, "drivers", "nic")
			require.NoError(t, err)
			got, err := h.Module(ctx, "drivers", "nic")
			require.NoError(t, err)
			valid := meta.FindStatusCondition(got.Status.Conditions, kmm.ConditionValid)
			require.NotNil(t, valid)
			assert.Equal(t, metav1.ConditionFalse, valid.Status)
			if tc.gatePasses {
				assert.Equal(t, "1 error(s): spec.dra: Forbidden: kmmkit runs no DRA driver: remove spec.dra (use spec.devicePlugin for a device plugin), "+
					"or let KMM's operator drive this Module", valid.Message, "the version gate passes")
				return
			}
			assert.Equal(t, string(reason.InvalidSpec), valid.Reason)
			assert.Contains(t, valid.Message, "spec.dra")
			assert.Contains(t, valid.Message, "1.34")
		})
	}
}
