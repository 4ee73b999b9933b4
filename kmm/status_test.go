package kmm_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

// The tests of this file are the status scenarios a user meets: each
// failure of a selected node must show in Loaded, Degraded, the counts
// and status.kernels, with a reason constant and a message naming the
// node, the kernel or the field. n1 and n2 run k56 (whose image exists),
// n3 runs k57; "other" is not selected.

const img57 = "registry.example.com/nic:" + k57

// settled reconciles nic to a steady state and returns it.
func settled(t *testing.T, h *kmmtest.Harness) *v1beta1.Module {
	t.Helper()
	ctx := context.Background()
	_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	return m
}

// assertCond checks a condition's status and reason, and that its
// message holds every part.
func assertCond(t *testing.T, m *v1beta1.Module, typ string, status metav1.ConditionStatus, r reason.Reason, parts ...string) {
	t.Helper()
	c := cond(t, m, typ)
	assert.Equal(t, status, c.Status, "%s: %s", typ, c.Message)
	assert.Equal(t, string(r), c.Reason, "%s: %s", typ, c.Message)
	for _, p := range parts {
		assert.Contains(t, c.Message, p, typ)
	}
	assert.Equal(t, m.Generation, c.ObservedGeneration, typ)
}

// assertN3Fails checks what a user must read when only n3 (k57) has no
// driver, for reason r: not Loaded, Degraded naming n3, its kernel and
// the cause, honest counts.
func assertN3Fails(t *testing.T, m *v1beta1.Module, r reason.Reason, state v1beta1.KernelState, cause string) {
	t.Helper()
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 2}, m.Status.ModuleLoader)
	assertCond(t, m, kmm.ConditionValid, metav1.ConditionTrue, reason.Valid)
	assertCond(t, m, kmm.ConditionImagesReady, metav1.ConditionFalse, r, "kernel "+k57, cause)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, r, "loaded on 2 of 3 desired node(s); not on 1: n3 ("+string(r)+")")
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, r,
		"1 of 3 desired node(s) do not have the module", "kernel "+k57+" on 1 node(s) (n3): "+string(r), cause)
	require.Len(t, m.Status.Kernels, 2)
	assert.Equal(t, v1beta1.KernelStateReady, m.Status.Kernels[0].State)
	assert.Equal(t, reason.ImageReady, m.Status.Kernels[0].Reason)
	ks := m.Status.Kernels[1]
	assert.Equal(t, k57, ks.Kernel)
	assert.Equal(t, state, ks.State)
	assert.Equal(t, r, ks.Reason)
	assert.Contains(t, ks.Message, cause)
}

func TestStatusUnmappedNode(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	mod := nicModule()
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Regexp = ""
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Literal = k56
	require.NoError(t, h.CreateModule(ctx, mod))
	m := settled(t, h)
	assertN3Fails(t, m, reason.NoMapping, v1beta1.KernelStateNoMapping,
		"no entry of spec.moduleLoader.container.kernelMappings matches kernel "+k57)
	assert.Empty(t, m.Status.Kernels[1].Image)
	assert.Equal(t, []string{"n1", "n2"}, keys(h.Loader.LoadedOn("drivers", "nic")))
	assert.Contains(t, strings.Join(h.Events(), "\n"), "Warning Degraded 1 of 3 desired node(s)")
}

func TestStatusRegistryFailures(t *testing.T) {
	for _, tc := range []struct {
		r      reason.Reason
		detail string
	}{
		{reason.Unauthorized, "the registry refused pull secret drivers/pull"},
		{reason.TLSError, "x509: certificate signed by unknown authority"},
		{reason.RegistryUnavailable, "dial tcp 10.0.0.1:443: connect: connection refused"},
	} {
		t.Run(string(tc.r), func(t *testing.T) {
			ctx := context.Background()
			h := cluster(t)
			h.FailImage(img57, tc.r, tc.detail)
			require.NoError(t, h.CreateModule(ctx, nicModule()))
			m := settled(t, h)
			assertN3Fails(t, m, tc.r, v1beta1.KernelStateCheckFailed, img57+": "+string(tc.r)+" ("+tc.detail+")")
			assert.Empty(t, h.Builder.Started(), "a failed check is no reason to build")
			assert.NotContains(t, h.Loader.LoadedOn("drivers", "nic"), "n3")
			assert.Contains(t, strings.Join(h.Events(), "\n"), "Warning ImageCheckFailed kernel "+k57+": "+string(tc.r))

			// Fixed in the registry: the node gets its driver.
			h.Registry.SetExists(img57, "sha256:57")
			h.Builder.SetPasses(0)
			m = settled(t, h)
			assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 3}, m.Status.ModuleLoader)
			assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionFalse, reason.AsExpected)
			assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionTrue, reason.AllNodesLoaded, "loaded on all 3 desired node(s)")
		})
	}
}

// TestStatusMissingPullSecret: an imageRepoSecret that does not exist is
// refused credentials, and the message names the field.
func TestStatusMissingPullSecret(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	mod := nicModule()
	mod.Spec.ImageRepoSecret = &corev1.LocalObjectReference{Name: "pull"}
	require.NoError(t, h.CreateModule(ctx, mod))
	m := settled(t, h)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 0}, m.Status.ModuleLoader)
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, reason.Unauthorized,
		"3 of 3 desired node(s)", "spec.imageRepoSecret: pull secret drivers/pull", "(n1, n2)", "(n3)")
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, reason.Unauthorized, "loaded on 0 of 3")
	for _, ks := range m.Status.Kernels {
		assert.Equal(t, v1beta1.KernelStateCheckFailed, ks.State)
		assert.Equal(t, reason.Unauthorized, ks.Reason)
	}
	assert.Empty(t, h.Loader.LoadedOn("drivers", "nic"))
}

func TestStatusImageNotFound(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	mod := nicModule()
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Build = nil
	require.NoError(t, h.CreateModule(ctx, mod))
	m := settled(t, h)
	assertN3Fails(t, m, reason.ImageNotFound, v1beta1.KernelStateMissing,
		"image "+img57+" does not exist (manifest unknown) and the Module defines no build or sign for kernel "+k57)
}

func TestStatusNoBuilder(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	_, err := h.RestartWith(kmm.WithBuilder(nil))
	require.NoError(t, err)
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	assertN3Fails(t, m, reason.NoBuilder, v1beta1.KernelStateMissing, "this reconciler has no builder")
}

func TestStatusBuildFailure(t *testing.T) {
	for _, tc := range []struct {
		r       reason.Reason
		message string
	}{
		{reason.BuildFailed, "build pod nic-build-x failed: kaniko exited with code 1 (Error)"},
		{reason.MissingSecret, `build secret drivers/git-token: secrets "git-token" not found`},
		// A built image that would not load is not published: the kernel
		// is not ready, whatever the staging tag holds.
		{reason.ImageLintFailed, "build nic-build-x pushed an image that would not load, so it was not published: registry.example.com/nic:" + k57 +
			"-kmmkit-unlinted would not load: 1 finding(s) for " + k57 + ": /opt/lib/modules/" + k57 + ": layout: does not exist"},
	} {
		t.Run(string(tc.r), func(t *testing.T) {
			ctx := context.Background()
			h := cluster(t)
			h.Builder.Fail(img57, tc.r, tc.message, "make: *** No rule to make target 'modules'.  Stop.")
			require.NoError(t, h.CreateModule(ctx, nicModule()))
			m := settled(t, h)
			assertN3Fails(t, m, tc.r, v1beta1.KernelStateBuildFailed, tc.message)
			assert.Contains(t, m.Status.Kernels[1].Message, "log: make: *** No rule to make target")
			assert.Equal(t, "nic-build-6-1-0-57-amd64", m.Status.Kernels[1].Build)
			assert.Contains(t, strings.Join(h.Events(), "\n"), "Warning BuildFailed kernel "+k57+": "+string(tc.r))
		})
	}
}

// TestStatusMissingDockerfile: with the Kaniko backend (on the fake
// clientset), a build whose Dockerfile ConfigMap is missing cannot even
// be requested: no build Pod, and the message names the ConfigMap.
func TestStatusMissingDockerfile(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	_, err := h.RestartWith(kmm.WithBuilder(newKaniko(t, h.Clientset)))
	require.NoError(t, err)
	require.NoError(t, h.Clientset.CoreV1().ConfigMaps("drivers").Delete(ctx, "nic-build", metav1.DeleteOptions{}))
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	assertN3Fails(t, m, reason.InvalidRequest, v1beta1.KernelStateBuildFailed, "build.dockerfileConfigMap drivers/nic-build does not exist")
	pods, err := h.Clientset.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, pods.Items)
}

func signedModule(t *testing.T, h *kmmtest.Harness, withSecrets bool) *v1beta1.Module {
	t.Helper()
	if withSecrets {
		for name, key := range map[string]string{"sign-key": "key", "sign-cert": "cert"} {
			_, err := h.Clientset.CoreV1().Secrets("drivers").Create(context.Background(), &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "drivers"}, Data: map[string][]byte{key: []byte("pem")}}, metav1.CreateOptions{})
			require.NoError(t, err)
		}
	}
	mod := nicModule()
	mod.Spec.ModuleLoader.Container.Sign = &v1beta1.Sign{KeySecret: &corev1.LocalObjectReference{Name: "sign-key"},
		CertSecret: &corev1.LocalObjectReference{Name: "sign-cert"}, FilesToSign: []string{"/opt/lib/modules/${KERNEL_FULL_VERSION}/nic_drv.ko"}}
	return mod
}

func TestStatusSignFailure(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	h := cluster(t, kmm.WithClock(clk))
	h.Signer.Fail(img57, errors.New("sign: filesToSign entry /opt/lib/modules/"+k57+"/nic_drv.ko matches no file"))
	require.NoError(t, h.CreateModule(ctx, signedModule(t, h, true)))
	m := settled(t, h)
	assertN3Fails(t, m, reason.SignFailed, v1beta1.KernelStateSignFailed, "nic_drv.ko matches no file")
	assert.Contains(t, strings.Join(h.Events(), "\n"), "Warning SignFailed kernel "+k57+": SignFailed")

	// A refused push while signing carries the registry's reason.
	h.Signer.Fail(img57, &kmmtest.RegistryError{Reason: reason.Unauthorized, Image: img57, Detail: "push refused"})
	clk.SetTime(clk.Now().Add(2 * time.Minute))
	m = settled(t, h)
	assertN3Fails(t, m, reason.Unauthorized, v1beta1.KernelStateSignFailed, "push refused")
}

func TestStatusSignKeyMissing(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	require.NoError(t, h.CreateModule(ctx, signedModule(t, h, false)))
	m := settled(t, h)
	// n1 and n2's image exists unsigned at the final tag: it is used as it
	// is (only missing images are built and signed).
	assertN3Fails(t, m, reason.MissingSecret, v1beta1.KernelStateSignFailed, `sign.keySecret drivers/sign-key: secrets "sign-key" not found`)
}

func TestStatusWorkerFailure(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.Registry.SetExists(img57, "sha256:57")
	msg := "modprobe: ERROR: could not insert 'nic_drv': Key was rejected by service"
	h.Loader.Fail("n2", "drivers", "nic", reason.WorkerFailed, msg)
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 2}, m.Status.ModuleLoader)
	assertCond(t, m, kmm.ConditionImagesReady, metav1.ConditionTrue, reason.AllImagesReady)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, reason.WorkerFailed, "loaded on 2 of 3 desired node(s); not on 1: n2 (WorkerFailed)")
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, reason.WorkerFailed,
		"1 of 3 desired node(s)", "node n2: WorkerFailed: "+msg)

	h.Loader.Recover("n2", "drivers", "nic")
	m = settled(t, h)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionTrue, reason.AllNodesLoaded)
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionFalse, reason.AsExpected)
}

// TestStatusModuleInUse: a node whose unload the kernel refuses, the
// module being in use, gives the Module's conditions that reason, with
// the node and the holder.
func TestStatusModuleInUse(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.Registry.SetExists(img57, "sha256:57")
	msg := "kmm worker unload: unload nic_drv: in use by nic_rdma (worker pod drivers/kmm-worker-n2-nic failed 3 time(s), last with exit code 2 on node n2; retried until the module is no longer in use)"
	h.Loader.Fail("n2", "drivers", "nic", reason.ModuleInUse, msg)
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, reason.ModuleInUse, "loaded on 2 of 3 desired node(s); not on 1: n2 (ModuleInUse)")
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, reason.ModuleInUse, "node n2: ModuleInUse: "+msg)
}

// TestStatusMixedFailures: several causes at once give the summary
// reasons, and every cause is named.
func TestStatusMixedFailures(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.FailImage(img57, reason.TLSError, "x509: certificate has expired")
	h.Loader.Fail("n1", "drivers", "nic", reason.WorkerImagePullFailed, "ErrImagePull: quay.io/acme/kmm:v1 not found")
	_, err := h.AddNode(ctx, "n4", "", map[string]string{"nic": "true"})
	require.NoError(t, err)
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 4, DesiredNumber: 4, AvailableNumber: 1}, m.Status.ModuleLoader)
	assertCond(t, m, kmm.ConditionImagesReady, metav1.ConditionFalse, reason.TLSError)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, reason.NodesFailing,
		"loaded on 1 of 4 desired node(s); not on 3: n1 (WorkerImagePullFailed), n3 (TLSError), n4 (NoKernelVersion)")
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, reason.NodesFailing,
		"3 of 4 desired node(s)", "node n4: NoKernelVersion", "kernel "+k57+" on 1 node(s) (n3): TLSError",
		"node n1: WorkerImagePullFailed: ErrImagePull")
}

// TestStatusBoundedMessages: a thousand nodes without a driver are
// counted, a few named.
func TestStatusBoundedMessages(t *testing.T) {
	ctx := context.Background()
	h, err := kmmtest.New()
	require.NoError(t, err)
	for i := range 1000 {
		_, err := h.AddNode(ctx, fmt.Sprintf("node-%04d", i), fmt.Sprintf("6.1.0-%d-amd64", i%20), map[string]string{"nic": "true"})
		require.NoError(t, err)
	}
	mod := nicModule()
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Build = nil
	require.NoError(t, h.CreateModule(ctx, mod))
	m := settled(t, h)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 1000, DesiredNumber: 1000}, m.Status.ModuleLoader)
	d := cond(t, m, kmm.ConditionDegraded)
	assert.Equal(t, string(reason.ImageNotFound), d.Reason)
	assert.Contains(t, d.Message, "1000 of 1000 desired node(s)")
	assert.Contains(t, d.Message, "kernel 6.1.0-0-amd64 on 50 node(s) (node-0000, node-0020, node-0040, node-0060, node-0080, and 45 more)")
	assert.Contains(t, d.Message, "; and 10 more")
	l := cond(t, m, kmm.ConditionLoaded)
	assert.Contains(t, l.Message, "loaded on 0 of 1000 desired node(s); not on 1000: node-0000 (ImageNotFound)")
	assert.Contains(t, l.Message, ", and 990 more")
	for _, c := range m.Status.Conditions {
		assert.Less(t, len(c.Message), 4000, c.Type)
	}
}

// TestStatusMessageLimit: a message never exceeds what the API server
// accepts for a condition, whatever a builder reports.
func TestStatusMessageLimit(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.Builder.Fail(img57, reason.BuildFailed, strings.Repeat("é", 40000), "")
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	for _, c := range m.Status.Conditions {
		assert.LessOrEqual(t, len(c.Message), 32768, c.Type)
		assert.True(t, strings.ToValidUTF8(c.Message, "?") == c.Message, "%s is valid UTF-8", c.Type)
	}
	assert.True(t, strings.HasSuffix(cond(t, m, kmm.ConditionDegraded).Message, "(cut)"))
}

// TestStatusLoaderFailure: when the loader cannot sync at all, the pass
// returns the error and a status that is safe to write: what the pass
// learned is in it, Loaded is Unknown, and the last known count stays.
func TestStatusLoaderFailure(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.Registry.SetExists(img57, "sha256:57")
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	require.Equal(t, int32(3), m.Status.ModuleLoader.AvailableNumber)

	h.Loader.FailSync(errors.New("listing worker pods of drivers/nic: the server is currently unable to handle the request"))
	require.NoError(t, h.SetKernel(ctx, "n3", k58)) // something this pass learns
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.ErrorContains(t, err, "unable to handle the request")
	assert.NotZero(t, res.RequeueAfter)
	m, err = h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, res.Status, m.Status, "the status was written back")
	// n3's new kernel has no image yet, so it is known not to be
	// available; n1 and n2 could not be asked and count as last known.
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 2}, m.Status.ModuleLoader,
		"the last known count, not zero")
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionUnknown, reason.LoaderFailed,
		"the node loader failed before it reported 2 of 3 desired node(s)", "unable to handle the request")
	require.Len(t, m.Status.Kernels, 2)
	assert.Equal(t, k58, m.Status.Kernels[1].Kernel, "the new kernel is known")
	assert.Equal(t, v1beta1.KernelStateBuilding, m.Status.Kernels[1].State)
	assertCond(t, m, kmm.ConditionImagesReady, metav1.ConditionFalse, reason.Building)

	h.Loader.FailSync(nil)
	m = settled(t, h)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionTrue, reason.AllNodesLoaded)
	assert.Equal(t, int32(3), m.Status.ModuleLoader.AvailableNumber)
}

// TestResultOnErrorIsSafeToWrite: a pass that fails before it learns
// anything returns the status it was given.
func TestResultOnErrorIsSafeToWrite(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	failing := kmm.WithNodeLister(func(context.Context) ([]*corev1.Node, error) { return nil, errors.New("nodes are forbidden") })
	_, err := h.RestartWith(failing)
	require.NoError(t, err)
	obj := kmm.Object{Namespace: "drivers", Name: "nic", Spec: m.Spec, Status: m.Status, Generation: m.Generation}
	res, err := h.Reconciler().ReconcileSpec(ctx, obj)
	require.ErrorContains(t, err, "nodes are forbidden")
	assert.Equal(t, m.Status, res.Status)
	obj.Name = ""
	res, err = h.Reconciler().ReconcileSpec(ctx, obj)
	require.Error(t, err)
	assert.Equal(t, m.Status, res.Status)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestStatusModuleLoaderRemoved: a spec without moduleLoader (a device
// plugin only) unloads what was loaded, and the status keeps no claim
// about images or loading.
func TestStatusModuleLoaderRemoved(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.Registry.SetExists(img57, "sha256:57")
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	m := settled(t, h)
	require.Len(t, h.Loader.LoadedOn("drivers", "nic"), 3)
	m.Spec.ModuleLoader = nil
	_, err := h.Modules.Update(ctx, m)
	require.NoError(t, err)
	m = settled(t, h)
	assert.Empty(t, h.Loader.LoadedOn("drivers", "nic"))
	assert.Nil(t, m.Status.ModuleLoader)
	assert.Empty(t, m.Status.Kernels)
	assertCond(t, m, kmm.ConditionValid, metav1.ConditionTrue, reason.Valid)
	assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionFalse, reason.AsExpected)
	for _, typ := range []string{kmm.ConditionImagesReady, kmm.ConditionLoaded} {
		assert.Nil(t, meta.FindStatusCondition(m.Status.Conditions, typ), typ)
	}
}
