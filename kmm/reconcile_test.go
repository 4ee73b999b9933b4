package kmm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kmmkit/kmmkit/builder/kaniko"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

const (
	k56 = "6.1.0-56-amd64"
	k57 = "6.1.0-57-amd64"
	k58 = "6.1.0-58-amd64"
)

func nicModule() *v1beta1.Module {
	return &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"},
		Spec: v1beta1.ModuleSpec{
			Selector: map[string]string{"nic": "true"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic_drv"},
				KernelMappings: []v1beta1.KernelMapping{{
					Regexp: "^.+$", ContainerImage: "registry.example.com/nic:${KERNEL_FULL_VERSION}",
					Build: &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-build"}},
				}},
			}},
		},
	}
}

// newKaniko returns a Kaniko builder with the default options.
func newKaniko(t *testing.T, cs kubernetes.Interface) *kaniko.Builder {
	t.Helper()
	b, err := kaniko.New(cs)
	require.NoError(t, err)
	return b
}

// cluster makes a harness with three matching nodes on two kernels and
// one node that does not match, the Dockerfile ConfigMap, and the image
// of the first kernel already in the registry.
func cluster(t *testing.T, opts ...kmm.Option) *kmmtest.Harness {
	t.Helper()
	ctx := context.Background()
	h, err := kmmtest.New(opts...)
	require.NoError(t, err)
	for name, kernel := range map[string]string{"n1": k56, "n2": k56, "n3": k57} {
		_, err := h.AddNode(ctx, name, kernel, map[string]string{"nic": "true"})
		require.NoError(t, err)
	}
	_, err = h.AddNode(ctx, "other", k56, nil)
	require.NoError(t, err)
	_, err = h.Clientset.CoreV1().ConfigMaps("drivers").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "nic-build", Namespace: "drivers"},
		Data: map[string]string{"dockerfile": "FROM scratch\n"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	h.Registry.SetExists("registry.example.com/nic:"+k56, "sha256:56")
	return h
}

func cond(t *testing.T, m *v1beta1.Module, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(m.Status.Conditions, typ)
	require.NotNil(t, c, "condition %s", typ)
	return *c
}

func writes(actions []k8stesting.Action) int {
	n := 0
	for _, a := range actions {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			n++
		}
	}
	return n
}

func TestReconcileBuildsAndLoads(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	require.NoError(t, h.CreateModule(ctx, nicModule()))

	// First pass: the existing image loads on n1 and n2; n3's is built.
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Greater(t, res.RequeueAfter.Seconds(), 0.0)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Contains(t, m.Finalizers, kmm.Finalizer)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 2}, m.Status.ModuleLoader)
	assert.Equal(t, string(reason.Building), cond(t, m, kmm.ConditionImagesReady).Reason)
	require.Len(t, m.Status.Kernels, 2)
	assert.Equal(t, v1beta1.KernelStateReady, m.Status.Kernels[0].State)
	assert.Equal(t, v1beta1.KernelStateBuilding, m.Status.Kernels[1].State)
	assert.Equal(t, "nic-build-6-1-0-57-amd64", m.Status.Kernels[1].Build)

	// Until stable: built, pushed, loaded everywhere.
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	m, err = h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 3}, m.Status.ModuleLoader)
	assert.Equal(t, metav1.ConditionTrue, cond(t, m, kmm.ConditionImagesReady).Status)
	assert.Equal(t, metav1.ConditionTrue, cond(t, m, kmm.ConditionLoaded).Status)
	assert.Equal(t, metav1.ConditionFalse, cond(t, m, kmm.ConditionDegraded).Status)
	loaded := h.Loader.LoadedOn("drivers", "nic")
	assert.Len(t, loaded, 3)
	assert.Equal(t, "registry.example.com/nic:"+k57, loaded["n3"].ContainerImage)
	assert.NotContains(t, loaded, "other")
	assert.Len(t, h.Builder.Started(), 1, "one build for the one missing image")
	ev := strings.Join(h.Events(), "\n")
	assert.Contains(t, ev, "Normal BuildStarted building registry.example.com/nic:"+k57)
	assert.Contains(t, ev, "Normal ImageBuilt built and pushed registry.example.com/nic:"+k57)
	assert.Contains(t, ev, "Normal Loaded loaded on all 3 desired node(s)")

	// A second pass: no write, no event, registry asked once per image.
	before := len(h.Clientset.Actions()) + len(h.Dynamic.Actions())
	beforeWrites := writes(h.Clientset.Actions()) + writes(h.Dynamic.Actions())
	checks := len(h.Registry.Requests())
	nEvents := len(h.Events())
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, beforeWrites, writes(h.Clientset.Actions())+writes(h.Dynamic.Actions()), "no API write on a steady pass")
	assert.Greater(t, len(h.Clientset.Actions())+len(h.Dynamic.Actions()), before)
	assert.Equal(t, 2, len(h.Registry.Requests())-checks, "one check per distinct image, not per node")
	assert.Equal(t, nEvents, len(h.Events()), "no event on a steady pass")
}

func TestReconcileKeepsCordonedNodes(t *testing.T) {
	for _, unload := range []bool{false, true} {
		ctx := context.Background()
		h := cluster(t, kmm.WithUnloadOnTaint(unload))
		require.NoError(t, h.CreateModule(ctx, nicModule()))
		_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
		require.NoError(t, err)
		n1, err := h.Clientset.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		require.NoError(t, err)
		n1.Spec.Unschedulable = true
		n1.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}}
		_, err = h.Clientset.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{})
		require.NoError(t, err)
		_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
		require.NoError(t, err)
		_, stillThere := h.Loader.LoadedOn("drivers", "nic")["n1"]
		assert.Equal(t, !unload, stillThere, "unloadOnTaint=%t", unload)
	}
}

func TestReconcileKernelChangeAndFailures(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)

	// n2 moves to the second kernel, whose image exists by now.
	require.NoError(t, h.SetKernel(ctx, "n2", k57))
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	assert.Equal(t, "registry.example.com/nic:"+k57, h.Loader.LoadedOn("drivers", "nic")["n2"].ContainerImage)

	// n3 moves to a kernel whose build fails: a condition and an event
	// that name the kernel and the reason, and the other nodes stay.
	h.Builder.Fail("registry.example.com/nic:"+k58, reason.BuildFailed, "make: *** No rule to make target", "Error 2")
	require.NoError(t, h.SetKernel(ctx, "n3", k58))
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	d := cond(t, m, kmm.ConditionDegraded)
	assert.Equal(t, metav1.ConditionTrue, d.Status)
	assert.Equal(t, string(reason.BuildFailed), d.Reason)
	assert.Contains(t, d.Message, "kernel "+k58+" on 1 node(s) (n3): BuildFailed")
	assert.Contains(t, d.Message, "No rule to make target")
	assert.Contains(t, strings.Join(h.Events(), "\n"), "Warning BuildFailed kernel "+k58)
	assert.Len(t, h.Loader.LoadedOn("drivers", "nic"), 2)
	assert.Equal(t, int32(2), m.Status.ModuleLoader.AvailableNumber)
}

func TestReconcileMissingImageWithoutBuild(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	mod := nicModule()
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Build = nil
	require.NoError(t, h.CreateModule(ctx, mod))
	_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	c := cond(t, m, kmm.ConditionImagesReady)
	assert.Equal(t, string(reason.ImageNotFound), c.Reason)
	assert.Contains(t, c.Message, "registry.example.com/nic:"+k57+" does not exist")
	assert.Contains(t, strings.Join(h.Events(), "\n"), "Warning ImageMissing")
	assert.Empty(t, h.Builder.Started())
}

// TestReconcileBuildThenSign: the build goes to an intermediate tag, the
// signer writes the final tag, and a failing signature never triggers a
// rebuild (KMM's loop).
func TestReconcileBuildThenSign(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	h := cluster(t, kmm.WithClock(clk))
	for name, key := range map[string]string{"sign-key": "key", "sign-cert": "cert"} {
		_, err := h.Clientset.CoreV1().Secrets("drivers").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "drivers"},
			Data: map[string][]byte{key: []byte("pem")}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	mod := nicModule()
	mod.Spec.ModuleLoader.Container.Sign = &v1beta1.Sign{KeySecret: &corev1.LocalObjectReference{Name: "sign-key"},
		CertSecret: &corev1.LocalObjectReference{Name: "sign-cert"}, FilesToSign: []string{"/opt/lib/modules/${KERNEL_FULL_VERSION}/nic_drv.ko"}}
	require.NoError(t, h.CreateModule(ctx, mod))
	final := "registry.example.com/nic:" + k57
	h.Signer.Fail(final, errors.New("sign: filesToSign entry matches no file"))
	for i := 0; i < 6; i++ {
		_, err := h.Reconcile(ctx, "drivers", "nic")
		require.NoError(t, err)
	}
	require.Len(t, h.Builder.Started(), 1, "one build, never repeated while signing fails")
	intermediate, err := sign.IntermediateTag(final)
	require.NoError(t, err)
	assert.Equal(t, intermediate, h.Builder.Started()[0].Image, "the unsigned image never goes to the final tag")
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, v1beta1.KernelStateSignFailed, m.Status.Kernels[1].State)

	assert.Contains(t, m.Status.Kernels[1].Message, "matches no file (retrying at "+clk.Now().Add(time.Minute).UTC().Format(time.RFC3339)+")")
	h.Signer.Fail(final, nil)
	clk.SetTime(clk.Now().Add(2 * time.Minute)) // past the signing backoff
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	reqs := h.Signer.Requests()
	last := reqs[len(reqs)-1]
	assert.Equal(t, intermediate, last.From.Image)
	assert.Equal(t, final, last.To.Image)
	assert.Equal(t, []string{"/opt/lib/modules/" + k57 + "/nic_drv.ko"}, last.FilesToSign)
	assert.Len(t, h.Loader.LoadedOn("drivers", "nic"), 3)
	assert.Len(t, h.Builder.Started(), 1)
}

func TestReconcileDeletion(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.Registry.SetExists("registry.example.com/nic:"+k57, "sha256:57")
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	require.Len(t, h.Loader.LoadedOn("drivers", "nic"), 3)
	h.Loader.SetDelay(1)
	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.False(t, res.Done, "unloads take a pass")
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err, "the finalizer holds the Module")
	assert.Contains(t, cond(t, m, kmm.ConditionLoaded).Message, "unloading from 3 node(s)")
	res, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.True(t, res.Done)
	assert.Empty(t, h.Loader.LoadedOn("drivers", "nic"))
	_, err = h.Module(ctx, "drivers", "nic")
	assert.Error(t, err, "gone once every node unloaded")
}

// TestReconcileDeletionInTerminatingNamespace never deadlocks (KMM does).
func TestReconcileDeletionInTerminatingNamespace(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	h.Registry.SetExists("registry.example.com/nic:"+k57, "sha256:57")
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	_, err = h.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "drivers"},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.True(t, res.Done)
	assert.Contains(t, strings.Join(h.Events(), "\n"), "Warning UnloadSkipped namespace drivers is being deleted")
}

// TestReconcileNoticesAVanishedImage: an image wiped from the registry is
// noticed by the periodic verification (or at once through
// imageRebuildTriggerGeneration) and rebuilt, where KMM believes it still
// exists.
func TestReconcileNoticesAVanishedImage(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	h := cluster(t, kmm.WithClock(clk), kmm.WithVerifyInterval(10*time.Minute))
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	require.Len(t, h.Builder.Started(), 1)

	// The registry is wiped; the fake builder forgets its builds too.
	h.Registry.SetMissing("registry.example.com/nic:" + k56)
	h.Builder.SetPasses(0)
	clk.SetTime(clk.Now().Add(11 * time.Minute))
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	started := h.Builder.Started()
	require.Len(t, started, 2, "the vanished image is rebuilt")
	assert.Equal(t, "registry.example.com/nic:"+k56, started[1].Image)

	// The trigger forces a verification now, and is recorded.
	h.Registry.SetMissing("registry.example.com/nic:" + k57)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	m.Spec.ImageRebuildTriggerGeneration = ptrInt(1)
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	m, err = h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, 1, *m.Status.ImageRebuildTriggerGeneration)
	assert.Equal(t, metav1.ConditionTrue, cond(t, m, kmm.ConditionImagesReady).Status)
}

func ptrInt(i int) *int { return &i }
