package loader_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kmmkit/kmmkit/internal/fakeapi"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
)

// cluster is what the pod loader scenario runs against: a client, and a
// way to read the events the loader emitted.
type cluster struct {
	cs       kubernetes.Interface
	recorder record.EventRecorder
	events   func() []string // "Reason node module-annotation"
	ns       string
	real     bool
}

func (c *cluster) node(t *testing.T, name, bootID string) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	n, err := c.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		n, err = c.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	if bootID != "" && n.Status.NodeInfo.BootID != bootID {
		n.Status.NodeInfo.BootID = bootID
		n.Status.NodeInfo.KernelVersion = "6.1.0-56-amd64"
		n, err = c.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	return n
}

func (c *cluster) pods(t *testing.T) []corev1.Pod {
	t.Helper()
	l, err := c.cs.CoreV1().Pods(c.ns).List(context.Background(), metav1.ListOptions{LabelSelector: loader.LabelWorkerAction})
	require.NoError(t, err)
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
	return l.Items
}

// kubelet plays the kubelet's part for a worker Pod: it sets the Pod's
// status, and removes Pods being deleted.
func (c *cluster) kubelet(t *testing.T, name string, mutate func(*corev1.PodStatus)) {
	t.Helper()
	ctx := context.Background()
	p, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	if p.CreationTimestamp.IsZero() {
		// The fake clientset sets no creation time; the API server does.
		p.CreationTimestamp = metav1.Now()
		p, err = c.cs.CoreV1().Pods(c.ns).Update(ctx, p, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	mutate(&p.Status)
	_, err = c.cs.CoreV1().Pods(c.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func (c *cluster) reapDeleted(t *testing.T) {
	t.Helper()
	for _, p := range c.pods(t) {
		if p.DeletionTimestamp != nil {
			require.NoError(t, c.cs.CoreV1().Pods(c.ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
		}
	}
}

func succeeded(s *corev1.PodStatus) {
	s.Phase = corev1.PodSucceeded
	s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "w", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}
}

func running(s *corev1.PodStatus) {
	s.Phase = corev1.PodRunning
	s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "w", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
}

func desiredConfig(kver, image string) *loader.PodRequest {
	return &loader.PodRequest{
		Config: v1beta1.ModuleConfig{
			KernelVersion: kver, ContainerImage: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic_drv", DirName: "/opt", Parameters: []string{"debug=1"}},
		},
		ServiceAccountName: "kmm-worker",
		Tolerations:        []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}},
		ModuleVersion:      "1.0",
	}
}

func stateOf(t *testing.T, states []loader.NodeState, node string) loader.NodeState {
	t.Helper()
	for _, s := range states {
		if s.Node == node {
			return s
		}
	}
	t.Fatalf("no state for node %s in %+v", node, states)
	return loader.NodeState{}
}

// runPodLoaderScenario drives every transition of KMM's per-node state
// machine through the pod loader, playing the kubelet.
func runPodLoaderScenario(t *testing.T, c *cluster) {
	ctx := context.Background()
	clock := clocktesting.NewFakePassiveClock(time.Now())
	l, err := loader.NewPodLoader(c.cs, "quay.io/kmmkit/kmm:v0.1",
		loader.WithEventRecorder(c.recorder), loader.WithClock(clock), loader.WithStuckTimeout(5*time.Minute))
	require.NoError(t, err)
	c.node(t, "n1", "boot-1")
	c.node(t, "n2", "boot-1")
	sync := func(desired map[string]*loader.PodRequest) []loader.NodeState {
		t.Helper()
		nodes, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		var ptrs []*corev1.Node
		for i := range nodes.Items {
			if strings.HasPrefix(nodes.Items[i].Name, "n") {
				ptrs = append(ptrs, &nodes.Items[i])
			}
		}
		states, err := l.Sync(ctx, loader.SyncRequest{Namespace: c.ns, Module: "nic", Nodes: ptrs, Desired: desired})
		require.NoError(t, err)
		return states
	}
	ready := loader.ReadyLabel(c.ns, "nic")
	version := loader.VersionReadyLabel(c.ns, "nic")
	v1 := desiredConfig("6.1.0-56-amd64", "registry.example.com/nic:v1")

	// 1. Load on n1: one loader Pod, and a second pass makes no duplicate.
	st := sync(map[string]*loader.PodRequest{"n1": v1})
	assert.Equal(t, loader.PhaseLoading, stateOf(t, st, "n1").Phase)
	st = sync(map[string]*loader.PodRequest{"n1": v1})
	pods := c.pods(t)
	require.Len(t, pods, 1)
	assert.Equal(t, "kmm-worker-n1-nic", pods[0].Name)
	assert.Equal(t, "Load", pods[0].Labels[loader.LabelWorkerAction])
	assert.Equal(t, "n1", pods[0].Spec.NodeName)

	// 2. The worker succeeds: labels, the observed record, the Pod is gone.
	c.kubelet(t, pods[0].Name, succeeded)
	st = sync(map[string]*loader.PodRequest{"n1": v1})
	s1 := stateOf(t, st, "n1")
	assert.Equal(t, loader.PhaseLoaded, s1.Phase)
	assert.Equal(t, metav1.ConditionTrue, s1.Condition.Status)
	require.NotNil(t, s1.Observed)
	assert.Equal(t, "boot-1", s1.Observed.BootID)
	assert.Equal(t, "registry.example.com/nic:v1", s1.Observed.Config.ContainerImage)
	assert.Equal(t, "gpu", s1.Observed.Tolerations[0].Key)
	assert.Empty(t, c.pods(t))
	n1 := c.node(t, "n1", "")
	assert.Contains(t, n1.Labels, ready)
	assert.Equal(t, "1.0", n1.Labels[version])
	assert.Equal(t, fmt.Sprintf("kmm.node.kubernetes.io/%s.nic.ready", c.ns), ready, "KMM's label name")

	// 3. A steady state makes no writes at all.
	rv := n1.ResourceVersion
	sync(map[string]*loader.PodRequest{"n1": v1})
	assert.Equal(t, rv, c.node(t, "n1", "").ResourceVersion, "no write on a second pass")
	assert.Empty(t, c.pods(t))

	// 4. A new config on the same kernel: unload the old one first.
	v2 := desiredConfig("6.1.0-56-amd64", "registry.example.com/nic:v2")
	v2.ModuleVersion = "2.0"
	st = sync(map[string]*loader.PodRequest{"n1": v2})
	assert.Equal(t, loader.PhaseUnloading, stateOf(t, st, "n1").Phase)
	pods = c.pods(t)
	require.Len(t, pods, 1)
	assert.Equal(t, "Unload", pods[0].Labels[loader.LabelWorkerAction])
	assert.Contains(t, pods[0].Annotations[loader.AnnotationWorkerConfig], "nic:v1", "the unloader unloads what was loaded")
	// The kernel says the module is in use: the worker fails with that
	// reason on its last line and, its Pod restarting on failure, is
	// retried; the node's reason is ModuleInUse, naming node and holder.
	c.kubelet(t, pods[0].Name, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodRunning
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "w", RestartCount: 1,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2,
				Message: "\"msg\"=\"pulling\"\n" + reason.Tagged("kmm worker unload: unload nic_drv: in use by nic_rdma", reason.ModuleInUse) + "\n"}}}}
	})
	inUse := stateOf(t, sync(map[string]*loader.PodRequest{"n1": v2}), "n1")
	assert.Equal(t, loader.PhaseFailed, inUse.Phase)
	assert.Equal(t, loader.ReasonModuleInUse, inUse.Condition.Reason)
	assert.Equal(t, fmt.Sprintf("kmm worker unload: unload nic_drv: in use by nic_rdma (worker pod %s/kmm-worker-n1-nic failed 1 time(s), last with exit code 2 on node n1; "+
		"retried until the module is no longer in use)", c.ns), inUse.Condition.Message)
	require.Len(t, c.pods(t), 1, "the unloader stays, and its container is restarted")
	assert.Equal(t, pods[0].UID, c.pods(t)[0].UID)
	require.NotNil(t, inUse.Observed)
	assert.Equal(t, "registry.example.com/nic:v1", inUse.Observed.Config.ContainerImage, "the old module is still recorded as loaded")
	assert.NotContains(t, c.node(t, "n1", "").Labels, ready, "not ready while the config differs")
	c.kubelet(t, pods[0].Name, succeeded)
	st = sync(map[string]*loader.PodRequest{"n1": v2})
	assert.Equal(t, loader.PhaseLoading, stateOf(t, st, "n1").Phase, "after the unload, the load starts in the same pass")
	pods = c.pods(t)
	require.Len(t, pods, 1)
	assert.Equal(t, "Load", pods[0].Labels[loader.LabelWorkerAction])
	assert.Contains(t, pods[0].Annotations[loader.AnnotationWorkerConfig], "nic:v2")
	// The kernel still runs another build of the module (loaded by hand):
	// the loader's last line is tagged, and the node's reason is
	// ModuleBuildMismatch, naming the node and both srcversions.
	mismatch := "kmm worker kmod load: load nic_drv (/tmp/opt/lib/modules/6.1.0-56-amd64/nic_drv.ko): " +
		"the kernel runs nic_drv srcversion OLD1, the image's file has srcversion NEW2: " +
		"another build of the module is loaded: unload it first (or let kmmkit's upgrade do it)"
	c.kubelet(t, pods[0].Name, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodRunning
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "w", RestartCount: 1,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2,
				Message: reason.Tagged(mismatch, reason.ModuleBuildMismatch) + "\n"}}}}
	})
	other := stateOf(t, sync(map[string]*loader.PodRequest{"n1": v2}), "n1")
	assert.Equal(t, loader.PhaseFailed, other.Phase)
	assert.Equal(t, loader.ReasonModuleBuildMismatch, other.Condition.Reason)
	assert.Equal(t, fmt.Sprintf("%s (worker pod %s/kmm-worker-n1-nic failed 1 time(s), last with exit code 2 on node n1; "+
		"retried until the other build is unloaded)", mismatch, c.ns), other.Condition.Message)
	require.Len(t, c.pods(t), 1, "the loader stays, and its container is restarted")
	assert.Equal(t, pods[0].UID, c.pods(t)[0].UID)
	c.kubelet(t, pods[0].Name, succeeded)
	st = sync(map[string]*loader.PodRequest{"n1": v2})
	assert.Equal(t, loader.PhaseLoaded, stateOf(t, st, "n1").Phase)
	assert.Equal(t, "2.0", c.node(t, "n1", "").Labels[version])

	// 5. The node came back on a new kernel: load directly, no unload.
	k2 := desiredConfig("6.1.0-57-amd64", "registry.example.com/nic:v2-57")
	k2.ModuleVersion = "2.0"
	c.node(t, "n1", "boot-2")
	st = sync(map[string]*loader.PodRequest{"n1": k2})
	pods = c.pods(t)
	require.Len(t, pods, 1)
	assert.Equal(t, "Load", pods[0].Labels[loader.LabelWorkerAction])
	c.kubelet(t, pods[0].Name, succeeded)
	st = sync(map[string]*loader.PodRequest{"n1": k2})
	assert.Equal(t, loader.PhaseLoaded, stateOf(t, st, "n1").Phase)
	assert.Equal(t, "boot-2", stateOf(t, st, "n1").Observed.BootID)

	// 6. A reboot with the same kernel: the module is gone, load again.
	c.node(t, "n1", "boot-3")
	st = sync(map[string]*loader.PodRequest{"n1": k2})
	assert.Equal(t, loader.PhaseLoading, stateOf(t, st, "n1").Phase)
	assert.NotContains(t, c.node(t, "n1", "").Labels, ready)
	pods = c.pods(t)
	require.Len(t, pods, 1)
	assert.Equal(t, "Load", pods[0].Labels[loader.LabelWorkerAction])
	c.kubelet(t, pods[0].Name, succeeded)
	st = sync(map[string]*loader.PodRequest{"n1": k2})
	assert.Equal(t, loader.PhaseLoaded, stateOf(t, st, "n1").Phase)

	// 7. Failures are conditions with reasons. The worker image cannot be
	// pulled on n2:
	st = sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1})
	c.kubelet(t, "kmm-worker-n2-nic", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodPending
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "quay.io/kmmkit/kmm:v0.1", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
	})
	s2 := stateOf(t, sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1}), "n2")
	assert.Equal(t, loader.PhaseFailed, s2.Phase)
	assert.Equal(t, loader.ReasonImagePull, s2.Condition.Reason)
	assert.Contains(t, s2.Condition.Message, "cannot pull quay.io/kmmkit/kmm:v0.1")
	assert.Equal(t, loader.PhaseLoaded, stateOf(t, st, "n1").Phase, "n1 is not disturbed")
	// The worker fails and restarts: its error is the reason.
	c.kubelet(t, "kmm-worker-n2-nic", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodRunning
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "w", RestartCount: 2,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1,
				Message: "pulling image\nload nic_drv (/opt/lib/modules/x/nic_drv.ko): vermagic mismatch: module built for 6.1.0-55-amd64\n"}}}}
	})
	s2 = stateOf(t, sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1}), "n2")
	assert.Equal(t, loader.ReasonWorkerFailed, s2.Condition.Reason)
	assert.Contains(t, s2.Condition.Message, "vermagic mismatch: module built for 6.1.0-55-amd64")
	// A config change replaces the failing, outdated worker (KMM keeps it).
	v1b := desiredConfig("6.1.0-56-amd64", "registry.example.com/nic:v1b")
	old := c.pods(t)
	sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1b})
	c.reapDeleted(t)
	sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1b})
	pods = c.pods(t)
	require.Len(t, pods, 1)
	assert.NotEqual(t, old[0].Annotations[loader.AnnotationWorkerHash], pods[0].Annotations[loader.AnnotationWorkerHash])
	assert.Contains(t, pods[0].Annotations[loader.AnnotationWorkerConfig], "nic:v1b")
	// A worker that runs too long is reported as stuck.
	c.kubelet(t, pods[0].Name, running)
	s2 = stateOf(t, sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1b}), "n2")
	assert.Equal(t, loader.ReasonLoading, s2.Condition.Reason)
	assert.Greater(t, s2.RequeueAfter, time.Duration(0), "requeued to notice a stuck worker")
	clock.SetTime(clock.Now().Add(6 * time.Minute))
	s2 = stateOf(t, sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1b}), "n2")
	assert.Equal(t, loader.ReasonWorkerStuck, s2.Condition.Reason)
	assert.Contains(t, s2.Condition.Message, "may be stuck")
	// A Pod that failed as a whole (evicted) is removed and retried.
	c.kubelet(t, pods[0].Name, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodFailed
		s.Reason = "Evicted"
		s.Message = "low on memory"
	})
	s2 = stateOf(t, sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1b}), "n2")
	assert.Equal(t, loader.ReasonPodFailed, s2.Condition.Reason)
	assert.Contains(t, s2.Condition.Message, "low on memory")
	assert.Empty(t, c.pods(t))
	sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1b})
	require.Len(t, c.pods(t), 1, "retried")

	// 8. n2 is no longer wanted while loading: the loader is stopped.
	st = sync(map[string]*loader.PodRequest{"n1": k2})
	c.reapDeleted(t)
	assert.Empty(t, c.pods(t))
	sync(map[string]*loader.PodRequest{"n1": k2})
	assert.Empty(t, c.pods(t), "nothing was loaded on n2: nothing to unload")

	// 9. A NoExecute taint the Module does not tolerate blocks the worker.
	n2 := c.node(t, "n2", "")
	n2.Spec.Taints = []corev1.Taint{{Key: "maintenance", Effect: corev1.TaintEffectNoExecute}}
	_, err = c.cs.CoreV1().Nodes().Update(ctx, n2, metav1.UpdateOptions{})
	require.NoError(t, err)
	s2 = stateOf(t, sync(map[string]*loader.PodRequest{"n1": k2, "n2": v1}), "n2")
	assert.Equal(t, loader.PhaseBlocked, s2.Phase)
	assert.Contains(t, s2.Condition.Message, "maintenance")
	assert.Empty(t, c.pods(t))

	// 10. Unload from n1 when no longer desired, then nothing is left.
	st = sync(nil)
	assert.Equal(t, loader.PhaseUnloading, stateOf(t, st, "n1").Phase)
	pods = c.pods(t)
	require.Len(t, pods, 1)
	assert.Equal(t, "Unload", pods[0].Labels[loader.LabelWorkerAction])
	assert.Contains(t, pods[0].Annotations[loader.AnnotationWorkerConfig], "6.1.0-57-amd64")
	assert.Equal(t, "kmm-worker", pods[0].Spec.ServiceAccountName, "the unloader runs as the loader did")
	c.kubelet(t, pods[0].Name, succeeded)
	assert.Equal(t, loader.PhaseUnloaded, stateOf(t, sync(nil), "n1").Phase)
	assert.Empty(t, sync(nil), "no node has anything of the module left")
	n1 = c.node(t, "n1", "")
	assert.NotContains(t, n1.Labels, ready)
	assert.NotContains(t, n1.Labels, version)
	assert.NotContains(t, n1.Annotations, loader.ObservedAnnotation(c.ns, "nic"))
	assert.Empty(t, c.pods(t))

	// Events: one ModuleLoaded per load, one ModuleUnloaded per unload.
	assert.Eventually(t, func() bool {
		ev := c.events()
		loaded, unloaded := 0, 0
		for _, e := range ev {
			switch {
			case strings.HasPrefix(e, "ModuleLoaded n1 "+c.ns+"/nic"):
				loaded++
			case strings.HasPrefix(e, "ModuleUnloaded n1 "+c.ns+"/nic"):
				unloaded++
			}
		}
		return loaded == 4 && unloaded == 4
	}, 10*time.Second, 100*time.Millisecond, "events: %v", c.events())
}

// TestPodLoaderFakeClientset runs the scenario on client-go's fake
// clientset: fast, and what users get in unit tests.
func TestPodLoaderFakeClientset(t *testing.T) {
	runPodLoaderScenario(t, fakeCluster(k8sfake.NewClientset()))
}

// TestPodLoaderFakeAPI runs it on internal/fakeapi, which has UIDs,
// resource versions and delete preconditions.
func TestPodLoaderFakeAPI(t *testing.T) {
	api, err := fakeapi.New()
	require.NoError(t, err)
	runPodLoaderScenario(t, fakeCluster(api.Client()))
}

// fakeCluster is a cluster on a fake clientset, with a FakeRecorder.
func fakeCluster(cs kubernetes.Interface) *cluster {
	rec := record.NewFakeRecorder(100)
	var seen []string
	return &cluster{cs: cs, recorder: rec, ns: "drivers", events: func() []string {
		for {
			select {
			case e := <-rec.Events:
				seen = append(seen, e)
			default:
				out := make([]string, 0, len(seen))
				for _, e := range seen {
					// FakeRecorder formats "Normal Reason message".
					f := strings.Fields(e)
					if len(f) >= 4 {
						out = append(out, f[1]+" n1 "+f[3])
					}
				}
				return out
			}
		}
	}}
}

// TestPodLoaderAPIServer runs the scenario against the real
// kube-apiserver, with events posted through a real broadcaster.
func TestPodLoaderAPIServer(t *testing.T) {
	cs, err := kubernetes.NewForConfig(testenv.RESTConfig(t))
	require.NoError(t, err)
	ctx := context.Background()
	ns := fmt.Sprintf("kmmkit-pl-%d", rand.Uint32())
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kmm-worker"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kmmkit-test"})
	// Node names are cluster-wide: prefix them per test run is not
	// possible with the scenario's fixed names, so use a fresh module
	// namespace and delete the nodes afterwards (cluster.node does).
	c := &cluster{cs: cs, recorder: rec, ns: ns, real: true, events: func() []string {
		l, err := cs.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil
		}
		var out []string
		for _, e := range l.Items {
			if e.Annotations["module"] != ns+"/nic" {
				continue
			}
			for i := int32(0); i < max(e.Count, 1); i++ {
				out = append(out, e.Reason+" "+e.InvolvedObject.Name+" "+e.Annotations["module"])
			}
		}
		return out
	}}
	runPodLoaderScenario(t, c)
}

func TestNodeKeysStayValid(t *testing.T) {
	assert.Equal(t, "kmm.node.kubernetes.io/drivers.nic.version.ready", loader.VersionReadyLabel("drivers", "nic"))
	ns, name := strings.Repeat("n", 63), strings.Repeat("m", 60)
	for _, k := range []string{loader.ReadyLabel(ns, name), loader.VersionReadyLabel(ns, name), loader.ObservedAnnotation(ns, name)} {
		assert.Empty(t, validation.IsQualifiedName(k), k)
	}
	assert.True(t, strings.HasSuffix(loader.ReadyLabel(ns, name), ".ready"))
	assert.NotEqual(t, loader.ReadyLabel(ns, name), loader.ReadyLabel(ns, name+"x"), "different modules, different labels")
}

// FuzzObservedOn: whatever a node annotation holds, reading it never
// panics, and a record that reads back is what was written.
func FuzzObservedOn(f *testing.F) {
	f.Add(`{"config":{"kernelVersion":"6.1.0-56-amd64","containerImage":"r/i:t","modprobe":{"moduleName":"m"}},"bootID":"b"}`)
	f.Add(`{"config":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, raw string) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{loader.ObservedAnnotation("ns", "m"): raw}}}
		obs, ok, err := loader.ObservedOn(n, "ns", "m")
		if err != nil {
			if !strings.Contains(err.Error(), loader.ObservedAnnotation("ns", "m")) {
				t.Fatalf("error does not name the annotation: %v", err)
			}
			return
		}
		if !ok || obs == nil {
			t.Fatal("a readable annotation gave no record")
		}
	})
}

// TestPodLoaderWorkerPodRejected: a worker Pod the API server refuses
// (Pod Security admission answers 403) is reported with its own reason
// and the server's answer, not as a worker that ran and failed.
func TestPodLoaderWorkerPodRejected(t *testing.T) {
	e := newNMCEnv(t)
	e.addNode(t, "n1", "boot-1")
	e.cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "kmm-worker-n1-nic",
			errors.New(`violates PodSecurity "baseline:latest": hostPath volumes (volume "firmware")`))
	})
	st, err := e.trySync(t, "nic", map[string]*loader.PodRequest{"n1": desiredConfig(kver, "registry.example.com/nic:v1")})
	require.Error(t, err)
	s := stateOf(t, st, "n1")
	assert.Equal(t, loader.PhaseFailed, s.Phase)
	assert.Equal(t, string(reason.WorkerPodRejected), s.Condition.Reason)
	assert.Contains(t, s.Condition.Message, "the API server refused worker pod kmm-worker-n1-nic")
	assert.Contains(t, s.Condition.Message, `violates PodSecurity "baseline:latest"`)
}
