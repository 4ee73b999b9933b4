package loader_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/fakeapi"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
)

const (
	kernel1 = "6.1.0-56-amd64"
	kernel2 = "6.1.0-57-amd64"
)

// snapshot is the cluster as it was at the start of one pass.
type snapshot struct {
	nodes map[string]*corev1.Node
	pods  map[string]*corev1.Pod
}

// laggingCluster runs the pod loader against views of the cluster taken
// from earlier passes: lag says, per pass and object, how many passes
// back its view is. It plays the kubelet (a worker succeeds one pass after
// it appears), and records every worker Pod created, every change of the
// .ready label, and every breach of the loader's promises.
type laggingCluster struct {
	t        *testing.T
	admin    kubernetes.Interface
	loader   *loader.PodLoader
	owner    identity.Owner
	req      loader.SyncRequest
	lag      func(pass int, kind, name string) int
	maxLag   int
	pass     int
	snaps    []snapshot
	born     map[types.UID]int
	want     func(node *corev1.Node) *loader.PodRequest
	creates  map[string][]string // per node: "Load <image>" / "Unload <image>"
	ready    map[string][]bool   // per node: the .ready label's presence, at each change
	breaches []string
	events   *record.FakeRecorder
}

func newLaggingCluster(t *testing.T, id identity.Domain, lag func(pass int, kind, name string) int, maxLag int) *laggingCluster {
	t.Helper()
	api, err := fakeapi.New()
	require.NoError(t, err)
	c := &laggingCluster{t: t, admin: api.Client(), lag: lag, maxLag: maxLag, born: map[types.UID]int{},
		creates: map[string][]string{}, ready: map[string][]bool{}, events: record.NewFakeRecorder(1000)}
	ns, podNS := "drivers", ""
	if id.Kind == "NICFleet" {
		ns, podNS = "", "acme-system" // a cluster-scoped owner
	}
	c.owner = id.Owner(ns, "nic")
	c.req = loader.SyncRequest{Namespace: ns, Module: "nic", Identity: id, PodNamespace: podNS}
	for _, n := range []string{"n1", "n2", "n3"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		node.Status.NodeInfo = corev1.NodeSystemInfo{KernelVersion: kernel1, BootID: "boot-1"}
		_, err := c.admin.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	cs := api.Client()
	cs.PrependReactor("create", "pods", c.onCreate)
	c.loader, err = loader.NewPodLoader(cs, "quay.io/kmmkit/kmm:v0.1",
		loader.WithEventRecorder(c.events), loader.WithStuckTimeout(0), loader.WithPodLister(c.listPods))
	require.NoError(t, err)
	return c
}

// onCreate checks a worker Pod the loader is about to create.
func (c *laggingCluster) onCreate(a k8stesting.Action) (bool, runtime.Object, error) {
	pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
	ctx := context.Background()
	if _, err := c.admin.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err == nil {
		return false, nil, nil // the name is taken: the create fails, no Pod is made
	}
	node := pod.Spec.NodeName
	others, err := c.admin.CoreV1().Pods(pod.Namespace).List(ctx, metav1.ListOptions{LabelSelector: c.owner.WorkerSelector()})
	require.NoError(c.t, err)
	for _, o := range others.Items {
		if o.Spec.NodeName == node {
			c.breach("pass %d: a second worker Pod %s for node %s while %s exists", c.pass, pod.Name, node, o.Name)
		}
	}
	action := pod.Labels[c.owner.ActionLabel()]
	cfg, err := v1beta1.DecodeModuleConfig([]byte(pod.Annotations[loader.AnnotationWorkerConfig]))
	require.NoError(c.t, err)
	if action == string(loader.ActionUnload) {
		n, err := c.admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		require.NoError(c.t, err)
		obs, _, _ := loader.ObservedBy(n, c.owner)
		if want := c.want(n); want != nil && obs != nil && equality.Semantic.DeepEqual(obs.Config, want.Config) && obs.BootID == n.Status.NodeInfo.BootID {
			c.breach("pass %d: an unload Pod for node %s, which has the module loaded as desired", c.pass, node)
		}
	}
	c.creates[node] = append(c.creates[node], action+" "+cfg.ContainerImage)
	return false, nil, nil
}

func (c *laggingCluster) breach(format string, args ...any) {
	c.breaches = append(c.breaches, fmt.Sprintf(format, args...))
}

// snapshotNow records the cluster as it is.
func (c *laggingCluster) snapshotNow() {
	ctx := context.Background()
	s := snapshot{nodes: map[string]*corev1.Node{}, pods: map[string]*corev1.Pod{}}
	nodes, err := c.admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(c.t, err)
	for i := range nodes.Items {
		s.nodes[nodes.Items[i].Name] = &nodes.Items[i]
	}
	pods, err := c.admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	require.NoError(c.t, err)
	for i := range pods.Items {
		p := &pods.Items[i]
		s.pods[p.Namespace+"/"+p.Name] = p
	}
	c.snaps = append(c.snaps, s)
}

// view returns, for each object of a kind, its state lag passes ago.
func view[T any](c *laggingCluster, kind string, of func(snapshot) map[string]T) []T {
	names := map[string]bool{}
	for i := max(0, c.pass-c.maxLag); i <= c.pass; i++ {
		for n := range of(c.snaps[i]) {
			names[n] = true
		}
	}
	keys := make([]string, 0, len(names))
	for n := range names {
		keys = append(keys, n)
	}
	sort.Strings(keys)
	var out []T
	for _, n := range keys {
		at := max(0, c.pass-min(c.lag(c.pass, kind, n), c.maxLag))
		if o, ok := of(c.snaps[at])[n]; ok {
			out = append(out, o)
		}
	}
	return out
}

func (c *laggingCluster) listPods(_ context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error) {
	var out []*corev1.Pod
	for _, p := range view(c, "pod", func(s snapshot) map[string]*corev1.Pod { return s.pods }) {
		if p.Namespace == ns && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out, nil
}

// kubelet finishes every worker one pass after it appeared.
func (c *laggingCluster) kubelet() {
	ctx := context.Background()
	pods, err := c.admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	require.NoError(c.t, err)
	for i := range pods.Items {
		p := &pods.Items[i]
		born, ok := c.born[p.UID]
		if !ok {
			c.born[p.UID] = c.pass
			continue
		}
		if p.Status.Phase == "" && born < c.pass {
			succeeded(&p.Status)
			_, err := c.admin.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			require.NoError(c.t, err)
		}
	}
}

// run makes passes passes with the desired state want.
func (c *laggingCluster) run(passes int, want func(node *corev1.Node) *loader.PodRequest) {
	ctx := context.Background()
	c.want = want
	for i := 0; i < passes; i++ {
		c.kubelet()
		c.snapshotNow()
		nodes := view(c, "node", func(s snapshot) map[string]*corev1.Node { return s.nodes })
		req := c.req
		req.Nodes, req.Desired = nodes, map[string]*loader.PodRequest{}
		for _, n := range nodes {
			// The caller chooses from its view of the node, as kmm does.
			if w := want(n); w != nil {
				req.Desired[n.Name] = w
			}
		}
		_, err := c.loader.Sync(ctx, req)
		require.NoError(c.t, err, "pass %d", c.pass)
		c.recordReady()
		c.pass++
	}
}

func (c *laggingCluster) recordReady() {
	nodes, err := c.admin.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	require.NoError(c.t, err)
	for _, n := range nodes.Items {
		_, ready := n.Labels[c.owner.ReadyLabel()]
		c.ready[n.Name] = noteChange(c.ready[n.Name], ready)
	}
}

// noteChange appends v to the history of a label's presence when it
// differs from the last entry (the history starts with its first
// appearance).
func noteChange(h []bool, v bool) []bool {
	if len(h) == 0 && v || len(h) > 0 && h[len(h)-1] != v {
		return append(h, v)
	}
	return h
}

func (c *laggingCluster) setNode(name, kernel, bootID string) {
	ctx := context.Background()
	n, err := c.admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	require.NoError(c.t, err)
	n.Status.NodeInfo.KernelVersion, n.Status.NodeInfo.BootID = kernel, bootID
	_, err = c.admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	require.NoError(c.t, err)
}

// state is what is left on the nodes and as Pods: per node, the recorded
// config and labels.
func (c *laggingCluster) state() map[string]string {
	ctx := context.Background()
	out := map[string]string{}
	nodes, err := c.admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(c.t, err)
	for _, n := range nodes.Items {
		obs, _, err := loader.ObservedBy(&n, c.owner)
		require.NoError(c.t, err)
		s := "nothing"
		if obs != nil {
			s = fmt.Sprintf("%s boot=%s", obs.Config.ContainerImage, obs.BootID)
		}
		_, ready := n.Labels[c.owner.ReadyLabel()]
		out[n.Name] = fmt.Sprintf("%s ready=%t version=%q", s, ready, n.Labels[c.owner.VersionReadyLabel()])
	}
	pods, err := c.admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	require.NoError(c.t, err)
	for _, p := range pods.Items {
		out["pod "+p.Name] = string(p.Status.Phase)
	}
	return out
}

func (c *laggingCluster) eventCounts() map[string]int {
	out := map[string]int{}
	for {
		select {
		case e := <-c.events.Events:
			out[strings.Fields(e)[1]]++
		default:
			return out
		}
	}
}

// config is the desired config of version ver for a node's kernel.
func config(node *corev1.Node, ver string) *loader.PodRequest {
	k := node.Status.NodeInfo.KernelVersion
	r := desiredConfig(k, "registry.example.com/nic:"+k+"-"+ver)
	r.ModuleVersion = ver
	return r
}

// stateMachine drives every transition: load, a config change on n1
// (unload then load), a new kernel on n2, a reboot of n3, unloading n1,
// then all. It returns the state after each phase.
func stateMachine(c *laggingCluster) []map[string]string {
	passes := 3*c.maxLag + 8
	var states []map[string]string
	all := func(ver map[string]string) func(*corev1.Node) *loader.PodRequest {
		return func(n *corev1.Node) *loader.PodRequest {
			if v, ok := ver[n.Name]; ok {
				return config(n, v)
			}
			return nil
		}
	}
	c.run(passes, all(map[string]string{"n1": "1", "n2": "1", "n3": "1"}))
	states = append(states, c.state())
	c.run(passes, all(map[string]string{"n1": "2", "n2": "1", "n3": "1"}))
	states = append(states, c.state())
	c.setNode("n2", kernel2, "boot-2")
	c.run(passes, all(map[string]string{"n1": "2", "n2": "1", "n3": "1"}))
	states = append(states, c.state())
	c.setNode("n3", kernel1, "boot-3")
	c.run(passes, all(map[string]string{"n1": "2", "n2": "1", "n3": "1"}))
	states = append(states, c.state())
	c.run(passes, all(map[string]string{"n2": "1", "n3": "1"}))
	states = append(states, c.state())
	c.run(passes, all(nil))
	states = append(states, c.state())
	return states
}

// TestPodLoaderStaleViews runs the whole state machine with node and Pod
// views that lag by a fixed number of passes, and with views that jump
// back and forth in time per object, and checks that the loader does
// exactly what it does with fresh views: the same worker Pods in the same
// order, the same .ready label changes, the same events and the same
// state after each phase — never a second worker for a node, an unload
// where the module is loaded as desired, or a label flipped back.
func TestPodLoaderStaleViews(t *testing.T) {
	for _, id := range []identity.Domain{{}, {Name: "nic.acme.io", Kind: "NICDriver"}, {Name: "nic.acme.io", Kind: "NICFleet"}} {
		t.Run(id.Owner("", "x").String(), func(t *testing.T) {
			fresh := newLaggingCluster(t, id, func(int, string, string) int { return 0 }, 0)
			want := stateMachine(fresh)
			require.Empty(t, fresh.breaches)
			img := func(k, v string) string { return "registry.example.com/nic:" + k + "-" + v }
			assert.Equal(t, map[string][]string{
				"n1": {"Load " + img(kernel1, "1"), "Unload " + img(kernel1, "1"), "Load " + img(kernel1, "2"), "Unload " + img(kernel1, "2")},
				"n2": {"Load " + img(kernel1, "1"), "Load " + img(kernel2, "1"), "Unload " + img(kernel2, "1")},
				"n3": {"Load " + img(kernel1, "1"), "Load " + img(kernel1, "1"), "Unload " + img(kernel1, "1")},
			}, fresh.creates, "the state machine with fresh views")
			assert.Equal(t, map[string][]bool{"n1": {true, false, true, false}, "n2": {true, false, true, false}, "n3": {true, false, true, false}}, fresh.ready)
			assert.Equal(t, "registry.example.com/nic:"+kernel2+"-1 boot=boot-2 ready=true version=\"1\"", want[2]["n2"])
			assert.Equal(t, "nothing ready=false version=\"\"", want[5]["n1"])
			freshEvents := fresh.eventCounts()
			assert.Equal(t, map[string]int{"ModuleLoaded": 6, "ModuleUnloaded": 6}, freshEvents)

			cases := map[string]struct {
				lag    func(pass int, kind, name string) int
				maxLag int
			}{
				"nodes and pods 1 pass behind":   {func(int, string, string) int { return 1 }, 1},
				"nodes and pods 3 passes behind": {func(int, string, string) int { return 3 }, 3},
				"nodes 4 behind, pods fresh": {func(_ int, kind, _ string) int {
					if kind == "node" {
						return 4
					}
					return 0
				}, 4},
				"pods 4 behind, nodes fresh": {func(_ int, kind, _ string) int {
					if kind == "pod" {
						return 4
					}
					return 0
				}, 4},
			}
			for seed := uint64(1); seed <= 4; seed++ {
				rnd := rand.New(rand.NewPCG(seed, 7))
				cases[fmt.Sprintf("each object 0-4 passes behind, back and forth (seed %d)", seed)] = struct {
					lag    func(pass int, kind, name string) int
					maxLag int
				}{func(int, string, string) int { return rnd.IntN(5) }, 4}
			}
			for name, tc := range cases {
				t.Run(name, func(t *testing.T) {
					c := newLaggingCluster(t, id, tc.lag, tc.maxLag)
					got := stateMachine(c)
					assert.Empty(t, c.breaches)
					assert.Equal(t, fresh.creates, c.creates, "the same worker Pods, in the same order")
					assert.Equal(t, fresh.ready, c.ready, "the .ready label changes as with fresh views, never back and forth")
					assert.Equal(t, want, got, "the same state after each phase")
					assert.Equal(t, freshEvents, c.eventCounts())
				})
			}
		})
	}
}

// TestPodLoaderFindsItsPodUnderATakenName: a loader that did not create
// the running worker (a restart) and a Pod view that does not show it yet
// go on with that worker; a Pod of the same name that is not a worker of
// the owner is reported, never deleted.
func TestPodLoaderFindsItsPodUnderATakenName(t *testing.T) {
	ctx := context.Background()
	api, err := fakeapi.New()
	require.NoError(t, err)
	admin := api.Client()
	for _, n := range []string{"n1", "n2"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		node.Status.NodeInfo = corev1.NodeSystemInfo{KernelVersion: kernel1, BootID: "boot-1"}
		_, err = admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	want := desiredConfig(kernel1, "registry.example.com/nic:v1")
	running, err := loader.WorkerPod(loader.PodRequest{Node: "n1", Module: "nic", Namespace: "drivers", Action: loader.ActionLoad,
		Config: want.Config, ServiceAccountName: want.ServiceAccountName, Tolerations: want.Tolerations, ModuleVersion: want.ModuleVersion},
		"w")
	require.NoError(t, err)
	_, err = admin.CoreV1().Pods("drivers").Create(ctx, running, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.CoreV1().Pods("drivers").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: loader.WorkerPodName("n2", "nic"),
		Namespace: "drivers", Labels: map[string]string{"app": "something-else"}}}, metav1.CreateOptions{})
	require.NoError(t, err)

	empty := func(context.Context, string, labels.Selector) ([]*corev1.Pod, error) { return nil, nil }
	l, err := loader.NewPodLoader(api.Client(), "w", loader.WithPodLister(empty))
	require.NoError(t, err)
	nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	req := loader.SyncRequest{Namespace: "drivers", Module: "nic", Nodes: []*corev1.Node{&nodes.Items[0], &nodes.Items[1]},
		Desired: map[string]*loader.PodRequest{"n1": want, "n2": want}}
	states, err := l.Sync(ctx, req)
	require.NoError(t, err)
	s1 := stateOf(t, states, "n1")
	assert.Equal(t, loader.PhaseLoading, s1.Phase)
	assert.Contains(t, s1.Condition.Message, "worker pod kmm-worker-n1-nic is loading")
	s2 := stateOf(t, states, "n2")
	assert.Equal(t, loader.PhaseFailed, s2.Phase)
	assert.Equal(t, loader.ReasonNameConflict, s2.Condition.Reason)
	assert.Contains(t, s2.Condition.Message, "pod drivers/kmm-worker-n2-nic exists and is not a worker of Module drivers/nic")

	// The worker succeeds; the view still shows nothing: it is harvested
	// once, and the foreign Pod stays.
	p, err := admin.CoreV1().Pods("drivers").Get(ctx, "kmm-worker-n1-nic", metav1.GetOptions{})
	require.NoError(t, err)
	succeeded(&p.Status)
	_, err = admin.CoreV1().Pods("drivers").UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		nodes, err = admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		req.Nodes = []*corev1.Node{&nodes.Items[0], &nodes.Items[1]}
		states, err = l.Sync(ctx, req)
		require.NoError(t, err)
	}
	assert.Equal(t, loader.PhaseLoaded, stateOf(t, states, "n1").Phase)
	pods, err := admin.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	assert.Equal(t, "something-else", pods.Items[0].Labels["app"])
}

// TestPodLoaderNodeMissingFromView: a node the caller's view does not
// show yet keeps its worker and its module; once the node is really gone,
// its worker Pod is removed.
func TestPodLoaderNodeMissingFromView(t *testing.T) {
	ctx := context.Background()
	api, err := fakeapi.New()
	require.NoError(t, err)
	admin := api.Client()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	node.Status.NodeInfo = corev1.NodeSystemInfo{KernelVersion: kernel1, BootID: "boot-1"}
	_, err = admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	require.NoError(t, err)
	l, err := loader.NewPodLoader(api.Client(), "w")
	require.NoError(t, err)
	n, err := admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	require.NoError(t, err)
	want := desiredConfig(kernel1, "registry.example.com/nic:v1")
	_, err = l.Sync(ctx, loader.SyncRequest{Namespace: "drivers", Module: "nic", Nodes: []*corev1.Node{n},
		Desired: map[string]*loader.PodRequest{"n1": want}})
	require.NoError(t, err)
	pods := func() int {
		l, err := admin.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		return len(l.Items)
	}
	require.Equal(t, 1, pods())

	// A view without the node: nothing is unloaded or removed, nothing
	// is reported for it.
	states, err := l.Sync(ctx, loader.SyncRequest{Namespace: "drivers", Module: "nic"})
	require.NoError(t, err)
	assert.Empty(t, states)
	assert.Equal(t, 1, pods(), "the worker of a node the view lacks stays")

	require.NoError(t, admin.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}))
	states, err = l.Sync(ctx, loader.SyncRequest{Namespace: "drivers", Module: "nic"})
	require.NoError(t, err)
	assert.Empty(t, states)
	assert.Equal(t, 0, pods(), "the worker of a deleted node goes")
}
