package kmm_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	loaderfake "github.com/kmmkit/kmmkit/loader/fake"
	"github.com/kmmkit/kmmkit/reason"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
	"github.com/kmmkit/kmmkit/upgrade"
)

// rollEnv is a rolling upgrade on the real kube-apiserver, driven through
// ReconcileSpec with an embedder's identity. The test plays the kubelet
// (worker and workload Pods) and the disruption controller (PDB status).
type rollEnv struct {
	t       *testing.T
	cs      kubernetes.Interface
	run, ns string
	id      identity.Domain
	owner   identity.Owner
	policy  upgrade.Policy
	r       *kmm.Reconciler
	rec     *record.FakeRecorder
	obj     kmm.Object
	nodes   []string
	// failLoad makes the kubelet fail new loads (of image failImage) on
	// these nodes.
	failLoad  map[string]bool
	failImage string
	// loads records, per node, the worker actions and images run there.
	loads map[string][]string
	// dpStopped lists the nodes whose device plugin Pod the test removed
	// because upgrade.DevicePluginHeld said so.
	dpStopped []string

	// metrics outlive restarts (one registry for the test).
	metrics *kmm.Metrics
	reg     *prometheus.Registry

	mu     sync.Mutex
	writes []nodeWrite // every Node change the watch saw, in order
	last   map[string]nodeWrite
}

// nodeWrite is the part of a Node the invariants look at.
type nodeWrite struct {
	node          string
	state         upgrade.State
	ready         bool // the owner's .ready label: the module is loaded
	unschedulable bool
	rv            string
	// The owner's version labels (M, S, .version.ready) and whether the
	// device plugin target label is there.
	m, s, versionReady string
	dpTarget           bool
}

const (
	rollImageV1 = "registry.example.com/nic:v1"
	rollImageV2 = "registry.example.com/nic:v2"
)

func newRollEnv(t *testing.T, n int, p upgrade.Policy) *rollEnv {
	return newRollEnvAs(t, identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}, n, p)
}

// newRollEnvAs is newRollEnv for owners of identity id.
func newRollEnvAs(t *testing.T, id identity.Domain, n int, p upgrade.Policy) *rollEnv {
	cfg := testenv.RESTConfig(t)
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	run := fmt.Sprintf("roll%d", rand.Uint32()%100000)
	e := &rollEnv{t: t, cs: cs, run: run, ns: "kmmkit-" + run, id: id,
		policy: p, failLoad: map[string]bool{}, loads: map[string][]string{}, last: map[string]nodeWrite{}}
	e.owner = e.id.Owner(e.ns, "nic")
	e.reg = prometheus.NewRegistry()
	e.metrics, err = kmm.NewMetrics(e.reg)
	require.NoError(t, err)
	testenv.Namespace(t, cs, e.ns)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s-n%d", run, i)
		testenv.ReadyNode(t, cs, name, map[string]string{"rolling": run}, k56, name+"-boot")
		e.nodes = append(e.nodes, name)
	}
	e.obj = kmm.Object{Namespace: e.ns, Name: "nic", Generation: 1,
		Ref: &corev1.ObjectReference{APIVersion: "nic.acme.io/v1", Kind: "NICDriver", Namespace: e.ns, Name: "nic"},
		Spec: v1beta1.ModuleSpec{Selector: map[string]string{"rolling": run},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic_drv"},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: rollImageV1}},
			}}}}
	e.restart()
	return e
}

// restart replaces the Reconciler (and its PodLoader) with a new one, as
// a restarted controller process has: nothing is remembered.
func (e *rollEnv) restart() { e.restartWith(e.cs) }

// restartWith starts a new Reconciler on cs.
func (e *rollEnv) restartWith(cs kubernetes.Interface) {
	images := registryfake.New()
	images.SetExists(rollImageV1, "sha256:"+strings.Repeat("1", 64))
	images.SetExists(rollImageV2, "sha256:"+strings.Repeat("2", 64))
	e.rec = record.NewFakeRecorder(1000)
	r, err := kmm.NewReconciler(cs, kmm.WithIdentity(e.id), kmm.WithWorkerPods("quay.io/kmmkit/kmm:test"),
		kmm.WithImageChecker(images), kmm.WithEventRecorder(e.rec), kmm.WithRollingUpgrade(e.policy), kmm.WithMetrics(e.metrics))
	require.NoError(e.t, err)
	e.r = r
}

// crashingClient is a clientset whose requests fail once it has made
// writes writes: a controller killed in the middle of a pass.
func crashingClient(t *testing.T, writes int) kubernetes.Interface {
	cfg := rest.CopyConfig(testenv.RESTConfig(t))
	var mu sync.Mutex
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return crashTripper(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			dead := writes <= 0
			if req.Method != http.MethodGet {
				writes--
			}
			mu.Unlock()
			if dead {
				return nil, errors.New("the controller was killed")
			}
			return rt.RoundTrip(req)
		})
	}
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	return cs
}

type crashTripper func(*http.Request) (*http.Response, error)

func (f crashTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// watchNodes records every change of the test's nodes from now on.
func (e *rollEnv) watchNodes(ctx context.Context) {
	l, err := e.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "rolling=" + e.run})
	require.NoError(e.t, err)
	for i := range l.Items {
		e.observe(&l.Items[i])
	}
	w, err := e.cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{LabelSelector: "rolling=" + e.run, ResourceVersion: l.ResourceVersion})
	require.NoError(e.t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if n, ok := ev.Object.(*corev1.Node); ok && ev.Type == watch.Modified {
				e.observe(n)
			}
		}
	}()
	e.t.Cleanup(func() { w.Stop(); <-done })
}

func (e *rollEnv) observe(n *corev1.Node) {
	_, ready := n.Labels[e.owner.ReadyLabel()]
	_, dpTarget := n.Labels[e.owner.DevicePluginTargetLabel()]
	nw := nodeWrite{node: n.Name, state: upgrade.State(n.Labels[e.owner.UpgradeStateLabel()]), ready: ready,
		unschedulable: n.Spec.Unschedulable, rv: n.ResourceVersion, m: n.Labels[e.owner.VersionModuleLabel()],
		s: n.Labels[e.owner.VersionSchedulePodLabel()], versionReady: n.Labels[e.owner.VersionReadyLabel()], dpTarget: dpTarget}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writes = append(e.writes, nw)
	e.last[n.Name] = nw
}

// pass is one ReconcileSpec, then the kubelet's and the disruption
// controller's turn.
func (e *rollEnv) pass(ctx context.Context) kmm.Result {
	res, err := e.r.ReconcileSpec(ctx, e.obj)
	require.NoError(e.t, err)
	e.obj.Status = res.Status
	e.kubelet(ctx)
	return res
}

// kubelet runs worker Pods to success (or failure where asked), and
// removes Pods being deleted. It also plays the node lifecycle
// controller: a cordoned node gets the node.kubernetes.io/unschedulable
// taint, an uncordoned one loses it.
func (e *rollEnv) kubelet(ctx context.Context) {
	for _, name := range e.nodes {
		n := e.node(ctx, name)
		has := slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeUnschedulable })
		if has == n.Spec.Unschedulable {
			continue
		}
		if n.Spec.Unschedulable {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule})
		} else {
			n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeUnschedulable })
		}
		_, err := e.cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			require.NoError(e.t, err)
		}
	}
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil {
			err := e.cs.CoreV1().Pods(e.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
			if !apierrors.IsNotFound(err) {
				require.NoError(e.t, err)
			}
			continue
		}
		action, worker := p.Labels[e.owner.ActionLabel()]
		if p.Labels["app"] == "validator" && !podIsReady(p) {
			// The validation Pod gets Ready once v2 is loaded on its node.
			n := e.node(ctx, p.Spec.NodeName)
			if obs, ok, _ := loader.ObservedBy(n, e.owner); ok && obs.Config.ContainerImage == rollImageV2 {
				p.Status.Phase = corev1.PodRunning
				p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
				_, err := e.cs.CoreV1().Pods(e.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
				require.NoError(e.t, err)
			}
			continue
		}
		if p.Labels[e.owner.RoleLabel()] == identity.RoleDevicePlugin {
			// The device plugin DaemonSet controller honours the hook.
			nodes, err := e.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "rolling=" + e.run})
			require.NoError(e.t, err)
			var ptrs []*corev1.Node
			for i := range nodes.Items {
				ptrs = append(ptrs, &nodes.Items[i])
			}
			if upgrade.DevicePluginHeld(e.owner, ptrs)[p.Spec.NodeName] {
				require.NoError(e.t, e.cs.CoreV1().Pods(e.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
				e.dpStopped = append(e.dpStopped, p.Spec.NodeName)
			}
			continue
		}
		if !worker || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		cfg, err := v1beta1.DecodeModuleConfig([]byte(p.Annotations[loader.AnnotationWorkerConfig]))
		require.NoError(e.t, err)
		e.loads[p.Spec.NodeName] = append(e.loads[p.Spec.NodeName], action+" "+cfg.ContainerImage)
		if action == string(loader.ActionLoad) && e.failLoad[p.Spec.NodeName] && cfg.ContainerImage == e.failImage {
			p.Status.Phase = corev1.PodFailed
			p.Status.Message = "modprobe: ERROR: could not insert 'nic_drv': Exec format error"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error",
					Message: "modprobe: ERROR: could not insert 'nic_drv': Exec format error"}}}}
		} else {
			p.Status.Phase = corev1.PodSucceeded
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}
		}
		_, err = e.cs.CoreV1().Pods(e.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		require.NoError(e.t, err)
	}
}

// load brings v1 to every node, before the rolling upgrade matters.
func (e *rollEnv) load(ctx context.Context) {
	for i := 0; i < 20; i++ {
		e.pass(ctx)
		if c := meta.FindStatusCondition(e.obj.Status.Conditions, kmm.ConditionLoaded); c != nil && c.Status == metav1.ConditionTrue {
			return
		}
	}
	e.t.Fatalf("v1 never loaded: %+v", e.obj.Status.Conditions)
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// pod creates a Pod on node with labels, Running and Ready as asked.
func (e *rollEnv) pod(ctx context.Context, name, node string, labels map[string]string, ready bool) {
	p, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:1"}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	p.Status.Phase = corev1.PodRunning
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	_, err = e.cs.CoreV1().Pods(e.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(e.t, err)
}

// workload starts a Running, Ready Pod that uses the device on node.
func (e *rollEnv) workload(ctx context.Context, node string, labels map[string]string) {
	p, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-user-" + node[strings.LastIndex(node, "-")+1:], Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:1"}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	_, err = e.cs.CoreV1().Pods(e.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(e.t, err)
}

// assertInvariants checks every instant the watch recorded: at most
// MaxParallel nodes in an upgrade, and at most maxUnavailable targeted
// nodes without the module or cordoned.
func (e *rollEnv) assertInvariants(maxUnavailable int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := map[string]nodeWrite{}
	worstP, worstU := 0, 0
	for i, w := range e.writes {
		now[w.node] = w
		if len(now) < len(e.nodes) {
			continue // the initial list
		}
		inProgress, unavailable := 0, 0
		for _, s := range now {
			if s.state.InProgress() {
				inProgress++
			}
			if s.state.InProgress() || !s.ready || s.unschedulable {
				unavailable++
			}
		}
		worstP, worstU = max(worstP, inProgress), max(worstU, unavailable)
		if !assert.LessOrEqual(e.t, inProgress, e.policy.MaxParallel, "write %d (%s at rv %s): %d nodes in an upgrade: %v", i, w.node, w.rv, inProgress, now) ||
			!assert.LessOrEqual(e.t, unavailable, maxUnavailable, "write %d (%s at rv %s): %d nodes unavailable: %v", i, w.node, w.rv, unavailable, now) {
			break
		}
	}
	if e.t.Failed() {
		for _, w := range e.writes {
			e.t.Logf("%+v", w)
		}
	}
	e.t.Logf("%d node writes; at most %d nodes in an upgrade and %d unavailable at once", len(e.writes), worstP, worstU)
	assert.Equal(e.t, e.policy.MaxParallel, worstP, "the rollout used its parallelism")
}

// states is each node's sequence of upgrade states, repeats dropped.
func (e *rollEnv) states() map[string][]upgrade.State {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string][]upgrade.State{}
	for _, w := range e.writes {
		s := out[w.node]
		if w.state != upgrade.None && (len(s) == 0 || s[len(s)-1] != w.state) {
			out[w.node] = append(s, w.state)
		}
	}
	return out
}

func (e *rollEnv) events() []string {
	var out []string
	for {
		select {
		case ev := <-e.rec.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func (e *rollEnv) node(ctx context.Context, name string) *corev1.Node {
	n, err := e.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	require.NoError(e.t, err)
	return n
}

// TestRollingUpgrade: six nodes move from v1 to v2 with MaxParallel 2 and
// MaxUnavailable 33% (2 of 6): each is cordoned, its device users are
// evicted through the Eviction API, the module is reloaded and the node
// uncordoned. A PodDisruptionBudget blocks the eviction on one node until
// it is relaxed; the Reconciler is replaced mid-rollout and the new one
// resumes from the nodes' state. Every Node write is recorded by a watch
// and the limits hold at every instant.
func TestRollingUpgrade(t *testing.T) {
	ctx := context.Background()
	p := upgrade.Policy{MaxParallel: 2, MaxUnavailable: ptr.To(intstr.FromString("34%")), Cordon: true,
		WaitForPods: &upgrade.PodWait{Selector: "app=batch"},
		Evict:       &upgrade.Eviction{Selector: "app=gpu-user"},
		Validation:  &upgrade.Validation{Selector: "app=validator"}}
	e := newRollEnv(t, 6, p)
	e.load(ctx)
	for _, n := range e.nodes {
		e.pod(ctx, "validator-"+n[strings.LastIndex(n, "-")+1:], n, map[string]string{"app": "validator"}, false)
	}
	// A batch job runs on n1; a device plugin on n3.
	e.pod(ctx, "batch", e.nodes[0], map[string]string{"app": "batch"}, true)
	e.pod(ctx, "nic-device-plugin", e.nodes[2], map[string]string{e.owner.NameLabel(): "nic", e.owner.RoleLabel(): identity.RoleDevicePlugin}, true)
	for _, n := range e.nodes {
		labels := map[string]string{"app": "gpu-user"}
		if n == e.nodes[1] {
			labels["budget"] = "strict"
		}
		e.workload(ctx, n, labels)
	}
	// n2's user has a budget that allows no disruption (the test plays
	// the disruption controller: it writes the status).
	pdb, err := e.cs.PolicyV1().PodDisruptionBudgets(e.ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "strict"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"budget": "strict"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: 0, CurrentHealthy: 1,
		DesiredHealthy: 1, ExpectedPods: 1}
	_, err = e.cs.PolicyV1().PodDisruptionBudgets(e.ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{})
	require.NoError(t, err)
	e.watchNodes(ctx)

	// The new image.
	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	e.obj.Generation = 2
	blockedPasses, batchPasses, restarted, relaxed := 0, 0, false, false
	for i := 0; i < 300; i++ {
		res := e.pass(ctx)
		c := meta.FindStatusCondition(e.obj.Status.Conditions, kmm.ConditionUpgraded)
		require.NotNil(t, c)
		if c.Status == metav1.ConditionTrue {
			break
		}
		require.NotZero(t, res.RequeueAfter, "a rollout in progress asks for another pass")
		n1 := e.node(ctx, e.nodes[0])
		if upgrade.State(n1.Labels[e.owner.UpgradeStateLabel()]) == upgrade.WaitForPods {
			rec, err := upgrade.ParseRecord(n1.Annotations[e.owner.UpgradeAnnotation()])
			require.NoError(t, err)
			if rec.Message == "waiting for pod "+e.ns+"/batch to finish" {
				batchPasses++
			}
			if batchPasses == 3 {
				// The job finishes.
				b, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, "batch", metav1.GetOptions{})
				require.NoError(t, err)
				b.Status.Phase = corev1.PodSucceeded
				_, err = e.cs.CoreV1().Pods(e.ns).UpdateStatus(ctx, b, metav1.UpdateOptions{})
				require.NoError(t, err)
			}
		}
		n2 := e.node(ctx, e.nodes[1])
		rec, err := upgrade.ParseRecord(n2.Annotations[e.owner.UpgradeAnnotation()])
		require.NoError(t, err)
		if upgrade.State(n2.Labels[e.owner.UpgradeStateLabel()]) == upgrade.Evict && strings.Contains(rec.Message, "PodDisruptionBudget") {
			blockedPasses++
			assert.True(t, n2.Spec.Unschedulable, "cordoned while it waits")
			assert.Contains(t, rec.Message, "a PodDisruptionBudget blocks the eviction of "+e.ns+"/gpu-user-n2")
			_, err = e.cs.CoreV1().Pods(e.ns).Get(ctx, "gpu-user-n2", metav1.GetOptions{})
			assert.NoError(t, err, "the budget keeps the pod")
			if blockedPasses == 5 {
				// Relax the budget.
				pdb, err := e.cs.PolicyV1().PodDisruptionBudgets(e.ns).Get(ctx, "strict", metav1.GetOptions{})
				require.NoError(t, err)
				pdb.Spec.MinAvailable = ptr.To(intstr.FromInt32(0))
				pdb, err = e.cs.PolicyV1().PodDisruptionBudgets(e.ns).Update(ctx, pdb, metav1.UpdateOptions{})
				require.NoError(t, err)
				pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: 1, CurrentHealthy: 1,
					DesiredHealthy: 0, ExpectedPods: 1}
				_, err = e.cs.PolicyV1().PodDisruptionBudgets(e.ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{})
				require.NoError(t, err)
				relaxed = true
			}
		}
		if !restarted && e.doneCount(ctx) >= 3 {
			// Kill the controller in the middle of a pass (its second
			// write fails, and all after it); a new process resumes.
			var err error
			for j := 0; j < 10 && err == nil; j++ {
				e.restartWith(crashingClient(t, 1))
				var res kmm.Result
				res, err = e.r.ReconcileSpec(ctx, e.obj)
				if err == nil {
					e.obj.Status = res.Status
					e.kubelet(ctx)
				}
			}
			require.ErrorContains(t, err, "the controller was killed")
			mid := e.states()
			e.restart()
			restarted = true
			t.Logf("restarted with nodes at %v", mid)
		}
	}
	require.True(t, relaxed, "the budget blocked n2's eviction")
	require.True(t, restarted)
	c := meta.FindStatusCondition(e.obj.Status.Conditions, kmm.ConditionUpgraded)
	require.NotNil(t, c)
	assert.Equal(t, metav1.ConditionTrue, c.Status, c.Message)
	assert.Equal(t, string(reason.UpgradeDone), c.Reason)
	assert.Equal(t, "none of the 6 targeted node(s) has an outdated module or an upgrade under way", c.Message)

	e.assertInvariants(2)
	// Steady: another pass writes no node, and asks for no pass.
	rvs := func() map[string]string {
		out := map[string]string{}
		for _, name := range e.nodes {
			out[name] = e.node(ctx, name).ResourceVersion
		}
		return out
	}
	before := rvs()
	res := e.pass(ctx)
	assert.Equal(t, before, rvs(), "a steady pass writes no node")
	assert.GreaterOrEqual(t, res.RequeueAfter, time.Minute, "no pass is asked for by the rollout (only the image re-verification)")
	want := []upgrade.State{upgrade.Required, upgrade.Cordon, upgrade.WaitForPods, upgrade.Evict, upgrade.StopDevicePlugin,
		upgrade.Load, upgrade.Validate, upgrade.Uncordon, upgrade.Done}
	for name, seq := range e.states() {
		if seq[0] == upgrade.Cordon {
			seq = append([]upgrade.State{upgrade.Required}, seq...) // admitted in the pass that found it outdated
		}
		assert.Equal(t, want, seq, "node %s went through every step once, in order (across the restart too)", name)
	}
	for _, name := range e.nodes {
		n := e.node(ctx, name)
		assert.False(t, n.Spec.Unschedulable, "%s uncordoned", name)
		obs, ok, err := loader.ObservedBy(n, e.owner)
		require.NoError(t, err)
		require.True(t, ok, name)
		assert.Equal(t, rollImageV2, obs.Config.ContainerImage, name)
		assert.Equal(t, []string{"Load " + rollImageV1, "Unload " + rollImageV1, "Load " + rollImageV2}, e.loads[name],
			"%s: loaded once, then unloaded and loaded with v2 once", name)
		_, err = e.cs.CoreV1().Pods(e.ns).Get(ctx, "gpu-user-"+name[strings.LastIndex(name, "-")+1:], metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the device user on %s was evicted", name)
	}
	assert.GreaterOrEqual(t, blockedPasses, 5, "n2 waited for its budget")
	assert.Equal(t, 3, batchPasses, "n1 waited for its batch job")
	assert.Equal(t, []string{e.nodes[2]}, e.dpStopped, "the device plugin left n3 when the upgrade held it")

	m := gather(t, e.reg)
	lbl := func(state string) string {
		return fmt.Sprintf("{module=nic,namespace=%s,owner=%s,state=%s}", e.ns, e.id.String(), state)
	}
	assert.Equal(t, 6.0, m["kmmkit_upgrade_nodes"+lbl("upgrade-done")])
	assert.Equal(t, 0.0, m["kmmkit_upgrade_nodes"+lbl("upgrade-required")])
	assert.Equal(t, 6.0, m["kmmkit_upgrade_steps_total"+lbl("upgrade-done")])
	assert.Equal(t, 6.0, m["kmmkit_upgrade_steps_total"+lbl("module-update-required")])
}

// doneCount counts the nodes in upgrade-done.
func (e *rollEnv) doneCount(ctx context.Context) int {
	l, err := e.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: e.owner.UpgradeStateLabel() + "=" + string(upgrade.Done)})
	require.NoError(e.t, err)
	return len(l.Items)
}

// TestRollingUpgradeFailurePauses: the new load fails on a node; it goes
// upgrade-failed, the rollout pauses with a condition naming the node and
// why, and no other node is admitted. Once the load succeeds on the
// loader's retry, the node goes on and the rollout resumes. A node with
// the skip label keeps v1 throughout; an already cordoned node stays
// cordoned. It runs for KMM's own keys (the zero identity) and an
// embedder's.
func TestRollingUpgradeFailurePauses(t *testing.T) {
	for _, id := range []identity.Domain{{}, {Name: "nic.acme.io", Kind: "NICDriver"}} {
		t.Run(id.String(), func(t *testing.T) { testRollingUpgradeFailurePauses(t, id) })
	}
}

func testRollingUpgradeFailurePauses(t *testing.T, id identity.Domain) {
	ctx := context.Background()
	p := upgrade.Policy{MaxParallel: 2, MaxUnavailable: ptr.To(intstr.FromInt32(2)), Cordon: true,
		Evict: &upgrade.Eviction{Selector: "app=gpu-user", Delete: true}}
	e := newRollEnvAs(t, id, 6, p)
	e.load(ctx)
	bad, skipped, cordoned := e.nodes[0], e.nodes[5], e.nodes[4]
	// Evict.Delete deletes the device's users, budget or not.
	e.workload(ctx, cordoned, map[string]string{"app": "gpu-user", "budget": "strict"})
	pdb, err := e.cs.PolicyV1().PodDisruptionBudgets(e.ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "strict"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"budget": "strict"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, CurrentHealthy: 1, DesiredHealthy: 1, ExpectedPods: 1}
	_, err = e.cs.PolicyV1().PodDisruptionBudgets(e.ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{})
	require.NoError(t, err)
	e.failLoad[bad], e.failImage = true, rollImageV2
	_, err = e.cs.CoreV1().Nodes().Patch(ctx, skipped, "application/merge-patch+json",
		[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, e.owner.UpgradeSkipLabel())), metav1.PatchOptions{})
	require.NoError(t, err)
	_, err = e.cs.CoreV1().Nodes().Patch(ctx, cordoned, "application/merge-patch+json", []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	e.watchNodes(ctx)

	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	var c *metav1.Condition
	for i := 0; i < 60; i++ {
		e.pass(ctx)
		c = meta.FindStatusCondition(e.obj.Status.Conditions, kmm.ConditionUpgraded)
		if c != nil && c.Reason == string(reason.UpgradePaused) && e.doneCount(ctx) == 1 {
			break
		}
	}
	require.NotNil(t, c)
	assert.Equal(t, metav1.ConditionFalse, c.Status)
	assert.Equal(t, string(reason.UpgradePaused), c.Reason, c.Message)
	assert.Contains(t, c.Message, "the rollout is paused: 1 node(s) failed")
	assert.Contains(t, c.Message, "node "+bad+": loading the new module failed: ")
	assert.Contains(t, c.Message, "Exec format error")
	// Paused: more passes admit nobody.
	for i := 0; i < 5; i++ {
		e.pass(ctx)
	}
	for _, name := range e.nodes {
		n := e.node(ctx, name)
		s := upgrade.State(n.Labels[e.owner.UpgradeStateLabel()])
		switch name {
		case bad:
			assert.Equal(t, upgrade.Failed, s)
			assert.True(t, n.Spec.Unschedulable, "a failed node stays cordoned")
		case cordoned:
			assert.Equal(t, upgrade.Done, s, "unavailable already, it went first with the bad node, and finished")
		default:
			assert.Equal(t, upgrade.Required, s, "%s waits: the rollout is paused", name)
			obs, _, err := loader.ObservedBy(n, e.owner)
			require.NoError(t, err)
			assert.Equal(t, rollImageV1, obs.Config.ContainerImage, "%s keeps v1", name)
		}
	}
	ev := e.events()
	assert.True(t, slices.ContainsFunc(ev, func(s string) bool {
		return strings.HasPrefix(s, "Warning UpgradeFailed node "+bad+": upgrade failed in module-update-required: loading the new module failed")
	}), "%v", ev)
	assert.True(t, slices.ContainsFunc(ev, func(s string) bool {
		return strings.HasPrefix(s, "Normal UpgradeInProgress node "+cordoned+": uncordon-required -> upgrade-done: upgraded")
	}), "%v", ev)

	// The image is fixed: the loader's retry succeeds, and the rollout
	// goes on.
	e.failLoad[bad] = false
	for i := 0; i < 200; i++ {
		e.pass(ctx)
		c = meta.FindStatusCondition(e.obj.Status.Conditions, kmm.ConditionUpgraded)
		if e.doneCount(ctx) == 5 {
			break
		}
	}
	require.Equal(t, 5, e.doneCount(ctx), c.Message)
	assert.Equal(t, string(reason.UpgradeInProgress), c.Reason)
	assert.Contains(t, c.Message, "1 waiting (1 skipped)")
	n := e.node(ctx, skipped)
	assert.Equal(t, string(upgrade.Required), n.Labels[e.owner.UpgradeStateLabel()])
	obs, _, err := loader.ObservedBy(n, e.owner)
	require.NoError(t, err)
	assert.Equal(t, rollImageV1, obs.Config.ContainerImage, "the skipped node keeps v1")
	assert.True(t, e.node(ctx, cordoned).Spec.Unschedulable, "cordoned before the upgrade: left cordoned")
	_, err = e.cs.CoreV1().Pods(e.ns).Get(ctx, "gpu-user-"+cordoned[strings.LastIndex(cordoned, "-")+1:], metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "Evict.Delete deleted the device user despite its budget: %v", err)
	assert.False(t, e.node(ctx, bad).Spec.Unschedulable, "cordoned by the upgrade: uncordoned")
	e.assertInvariants(2)
}

// TestWithRollingUpgradeRefused: NewReconciler names the option and the
// field of a policy it cannot use.
func TestWithRollingUpgradeRefused(t *testing.T) {
	cs := k8sfake.NewClientset()
	_, err := kmm.NewReconciler(cs, kmm.WithNodeLoader(loaderfake.NewNodeLoader()), kmm.WithImageChecker(registryfake.New()),
		kmm.WithRollingUpgrade(upgrade.Policy{MaxParallel: 2, Evict: &upgrade.Eviction{Selector: "app in ("}}))
	assert.ErrorContains(t, err, `kmm: WithRollingUpgrade: upgrade policy: Evict.Selector "app in (": `)
	_, err = kmm.NewReconciler(cs, kmm.WithNodeLoader(loaderfake.NewNodeLoader()), kmm.WithImageChecker(registryfake.New()),
		kmm.WithRollingUpgrade(upgrade.Policy{MaxUnavailable: ptr.To(intstr.FromString("150%"))}))
	assert.EqualError(t, err, `kmm: WithRollingUpgrade: upgrade policy: MaxUnavailable "150%": must be between 0 and 100% or a non-negative number`)
	_, err = kmm.NewReconciler(cs, kmm.WithNodeLoader(loaderfake.NewNodeLoader()), kmm.WithImageChecker(registryfake.New()),
		kmm.WithRollingUpgrade(upgrade.Policy{}))
	assert.NoError(t, err, "the zero policy is valid")
}

// TestRollingUpgradeLeavesNothingBehind: a node that leaves the selector
// in the middle of a rollout loses its upgrade state, and a deleted
// owner's nodes lose theirs, the node the upgrade had cordoned being
// uncordoned.
func TestRollingUpgradeLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	e := newRollEnv(t, 3, upgrade.Policy{Cordon: true})
	e.load(ctx)
	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	state := func(name string) (upgrade.State, bool) {
		n := e.node(ctx, name)
		s, ok := n.Labels[e.owner.UpgradeStateLabel()]
		_, rec := n.Annotations[e.owner.UpgradeAnnotation()]
		return upgrade.State(s), ok || rec
	}
	for i := 0; i < 20; i++ {
		e.pass(ctx)
		if s, _ := state(e.nodes[0]); s == upgrade.Load {
			break
		}
	}
	s, _ := state(e.nodes[0])
	require.Equal(t, upgrade.Load, s)
	require.True(t, e.node(ctx, e.nodes[0]).Spec.Unschedulable)
	s, _ = state(e.nodes[1])
	require.Equal(t, upgrade.Required, s)

	// n2 leaves the selector.
	_, err := e.cs.CoreV1().Nodes().Patch(ctx, e.nodes[1], "application/merge-patch+json", []byte(`{"metadata":{"labels":{"rolling":null}}}`),
		metav1.PatchOptions{})
	require.NoError(t, err)
	e.pass(ctx)
	_, has := state(e.nodes[1])
	assert.False(t, has, "a node that left the selector keeps no upgrade state")

	// The owner is deleted.
	e.obj.Deleting = true
	var done bool
	for i := 0; i < 20 && !done; i++ {
		done = e.pass(ctx).Done
	}
	require.True(t, done)
	for k := range gather(t, e.reg) {
		assert.NotContains(t, k, "kmmkit_upgrade_nodes{", "a deleted owner leaves the upgrade gauge")
	}
	for _, name := range e.nodes {
		_, has := state(name)
		assert.False(t, has, "%s keeps no upgrade state", name)
		assert.False(t, e.node(ctx, name).Spec.Unschedulable, "%s is not cordoned", name)
	}
	assert.True(t, slices.ContainsFunc(e.events(), func(s string) bool {
		return s == "Normal UpgradeInProgress node "+e.nodes[0]+": module-update-required -> (none): uncordoned, the upgrade no longer applies"
	}))
}

// staleLister gives the env a Reconciler whose node view is *stale while
// *use is set, and returns the fresh lister.
func (e *rollEnv) staleLister(stale *[]*corev1.Node, use *bool) kmm.NodeLister {
	lister := func(ctx context.Context) ([]*corev1.Node, error) {
		if *use {
			return *stale, nil
		}
		l, err := e.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "rolling=" + e.run})
		if err != nil {
			return nil, err
		}
		out := make([]*corev1.Node, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, nil
	}
	images := registryfake.New()
	images.SetExists(rollImageV1, "sha256:"+strings.Repeat("1", 64))
	images.SetExists(rollImageV2, "sha256:"+strings.Repeat("2", 64))
	r, err := kmm.NewReconciler(e.cs, kmm.WithIdentity(e.id), kmm.WithWorkerPods("quay.io/kmmkit/kmm:test"),
		kmm.WithImageChecker(images), kmm.WithRollingUpgrade(e.policy), kmm.WithNodeLister(lister))
	require.NoError(e.t, err)
	e.r = r
	return lister
}

// TestRollingUpgradeStaleView: a pass whose node view is older than the
// rollout's last writes (an informer that lags) takes no step back: every
// write is made on the node read fresh, and a node whose upgrade keys
// differ from the view is left for the next pass.
func TestRollingUpgradeStaleView(t *testing.T) {
	ctx := context.Background()
	e := newRollEnv(t, 3, upgrade.Policy{Cordon: true})
	var stale []*corev1.Node
	useStale := false
	lister := e.staleLister(&stale, &useStale)
	e.load(ctx)
	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	first := e.nodes[0]
	stateOf := func() (upgrade.State, string, bool) {
		n := e.node(ctx, first)
		return upgrade.State(n.Labels[e.owner.UpgradeStateLabel()]), n.Annotations[e.owner.UpgradeAnnotation()], n.Spec.Unschedulable
	}
	for i := 0; i < 10; i++ {
		e.pass(ctx)
		if s, _, _ := stateOf(); s == upgrade.Cordon {
			break
		}
	}
	s, _, _ := stateOf()
	require.Equal(t, upgrade.Cordon, s)
	snapshot, err := lister(ctx)
	require.NoError(t, err)
	for _, n := range snapshot {
		stale = append(stale, n.DeepCopy())
	}
	for i := 0; i < 20; i++ {
		e.pass(ctx)
		if s, _, _ := stateOf(); s == upgrade.Load {
			break
		}
	}
	s, rec, cordoned := stateOf()
	require.Equal(t, upgrade.Load, s)
	require.True(t, cordoned)

	// Passes on the stale view: it says cordon-required.
	useStale = true
	for i := 0; i < 3; i++ {
		_, err := e.r.ReconcileSpec(ctx, e.obj)
		require.NoError(t, err)
	}
	s2, rec2, cordoned2 := stateOf()
	assert.Equal(t, upgrade.Load, s2, "no step back")
	assert.Equal(t, rec, rec2, "the record is untouched")
	assert.True(t, cordoned2)
	for _, name := range e.nodes[1:] {
		n := e.node(ctx, name)
		assert.Equal(t, string(upgrade.Required), n.Labels[e.owner.UpgradeStateLabel()], "%s: nobody admitted on a stale view", name)
	}

	// The view catches up: the rollout goes on.
	useStale = false
	for i := 0; i < 60; i++ {
		e.pass(ctx)
		if e.doneCount(ctx) == 3 {
			break
		}
	}
	assert.Equal(t, 3, e.doneCount(ctx))
}

// TestRollingUpgradeStaleViewAdmission: a view in which each node is as
// it was at some past time (as an informer's may be) never admits a node
// past the limits: n1 was skipped when the view saw it, and has been
// admitted since; n2 looks like the next candidate. The admission is
// checked against the API server first, and waits.
func TestRollingUpgradeStaleViewAdmission(t *testing.T) {
	ctx := context.Background()
	e := newRollEnv(t, 3, upgrade.Policy{})
	var stale []*corev1.Node
	useStale := false
	e.staleLister(&stale, &useStale)
	e.load(ctx)
	n1, n2, n3 := e.nodes[0], e.nodes[1], e.nodes[2]
	skip := func(name, v string) {
		_, err := e.cs.CoreV1().Nodes().Patch(ctx, name, "application/merge-patch+json",
			[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, e.owner.UpgradeSkipLabel(), v)), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	state := func(name string) upgrade.State {
		return upgrade.State(e.node(ctx, name).Labels[e.owner.UpgradeStateLabel()])
	}
	// With a device plugin: the Reconciler labels its target nodes.
	e.obj.Spec.DevicePlugin = &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "registry.example.com/nic-dp:1"}}
	e.pass(ctx)
	for _, name := range e.nodes {
		_, ok := e.node(ctx, name).Labels[e.owner.DevicePluginTargetLabel()]
		require.True(t, ok, "%s is a device plugin target", name)
	}
	skip(n1, `"true"`)
	skip(n2, `"true"`)
	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	for i := 0; i < 30 && state(n3) != upgrade.Done; i++ {
		e.pass(ctx)
	}
	require.Equal(t, upgrade.Done, state(n3))
	old1 := e.node(ctx, n1) // skipped, upgrade-required
	require.Equal(t, upgrade.Required, upgrade.State(old1.Labels[e.owner.UpgradeStateLabel()]))
	skip(n1, "null")
	skip(n2, "null")
	for i := 0; i < 10 && state(n1) != upgrade.Load; i++ {
		e.pass(ctx)
	}
	require.Equal(t, upgrade.Load, state(n1))
	require.Equal(t, upgrade.Required, state(n2))

	// The device plugin is held on n1 (in module-update-required), as
	// upgrade.DevicePluginHeld says: no target label there, while n2,
	// waiting, keeps its device plugin.
	target := e.owner.DevicePluginTargetLabel()
	_, onN1 := e.node(ctx, n1).Labels[target]
	_, onN2 := e.node(ctx, n2).Labels[target]
	assert.False(t, onN1, "no device plugin on a node being upgraded")
	assert.True(t, onN2, "the device plugin stays on a waiting node")

	stale = []*corev1.Node{old1, e.node(ctx, n2), e.node(ctx, n3)}
	useStale = true
	for i := 0; i < 3; i++ {
		_, err := e.r.ReconcileSpec(ctx, e.obj)
		require.NoError(t, err)
	}
	assert.Equal(t, upgrade.Required, state(n2), "n2 is not admitted beside n1 (MaxParallel 1)")
	assert.Equal(t, upgrade.Load, state(n1), "n1 takes no step back")
	useStale = false
	for i := 0; i < 60 && e.doneCount(ctx) < 3; i++ {
		e.pass(ctx)
	}
	assert.Equal(t, 3, e.doneCount(ctx))
	e.pass(ctx)
	for _, name := range e.nodes {
		_, ok := e.node(ctx, name).Labels[e.owner.DevicePluginTargetLabel()]
		assert.True(t, ok, "%s is a device plugin target again", name)
	}
}
