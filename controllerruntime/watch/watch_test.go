package watch_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/kmmkit/kmmkit/controllerruntime/watch"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

var (
	kmmID = identity.Domain{}
	nicID = identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
)

func node(labels map[string]string, kernel, boot string, taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: labels},
		Spec:   corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KernelVersion: kernel, BootID: boot}}}
}

func owner(name string, sel map[string]string, tol ...corev1.Toleration) watch.Owner {
	return watch.Owner{Key: types.NamespacedName{Namespace: "drivers", Name: name},
		Spec: &v1beta1.ModuleSpec{Selector: sel, Tolerations: tol}}
}

// with returns a copy of n changed by f.
func with(n *corev1.Node, f func(*corev1.Node)) *corev1.Node {
	n = n.DeepCopy()
	f(n)
	return n
}

// TestAffects pins which node changes matter to which owner.
func TestAffects(t *testing.T) {
	gpu := corev1.Taint{Key: "example.com/gpu", Effect: corev1.TaintEffectNoSchedule}
	base := node(map[string]string{"pool": "a", "zone": "1"}, "6.1.0-56-amd64", "boot-1")
	a := owner("a", map[string]string{"pool": "a"})
	b := owner("b", map[string]string{"pool": "b"})
	tolerant := owner("t", map[string]string{"pool": "a"}, corev1.Toleration{Key: "example.com/gpu", Operator: corev1.TolerationOpExists})
	readyA := kmmID.Owner("drivers", "a").ReadyLabel()
	dep := owner("dep", map[string]string{readyA: ""})
	carriesB := with(base, func(n *corev1.Node) {
		n.Annotations = map[string]string{kmmID.Owner("drivers", "b").ObservedAnnotation(): "{}"}
	})

	for _, tc := range []struct {
		name     string
		old, cur *corev1.Node
		want     []watch.Owner
		not      []watch.Owner
	}{
		{"created, selected", nil, base, []watch.Owner{a, tolerant}, []watch.Owner{b, dep}},
		{"deleted, selected", base, nil, []watch.Owner{a, tolerant}, []watch.Owner{b, dep}},
		{"deleted, carries b's module", carriesB, nil, []watch.Owner{a, b}, []watch.Owner{dep}},
		{"kernel", base, with(base, func(n *corev1.Node) { n.Status.NodeInfo.KernelVersion = "6.1.0-57-amd64" }), []watch.Owner{a, tolerant}, []watch.Owner{b, dep}},
		{"kernel, carries b's module", carriesB, with(carriesB, func(n *corev1.Node) { n.Status.NodeInfo.KernelVersion = "6.1.0-57-amd64" }), []watch.Owner{a, b}, []watch.Owner{dep}},
		{"boot ID", base, with(base, func(n *corev1.Node) { n.Status.NodeInfo.BootID = "boot-2" }), []watch.Owner{a}, []watch.Owner{b}},
		{"a label no selector names", base, with(base, func(n *corev1.Node) { n.Labels["zone"] = "2" }), nil, []watch.Owner{a, b, tolerant, dep}},
		{"leaves a, joins b", base, with(base, func(n *corev1.Node) { n.Labels["pool"] = "b" }), []watch.Owner{a, b, tolerant}, []watch.Owner{dep}},
		{"kmmkit writes a's ready label: only the dependent sees it", base, with(base, func(n *corev1.Node) { n.Labels[readyA] = "" }), []watch.Owner{dep}, []watch.Owner{a, b, tolerant}},
		{"kmmkit writes its annotation", base, with(base, func(n *corev1.Node) {
			n.Annotations = map[string]string{kmmID.Owner("drivers", "a").ObservedAnnotation(): "{}"}
		}), nil, []watch.Owner{a, b, tolerant, dep}},
		{"untolerated taint", base, with(base, func(n *corev1.Node) { n.Spec.Taints = []corev1.Taint{gpu} }), []watch.Owner{a}, []watch.Owner{tolerant, b}},
		{"PreferNoSchedule taint", base, with(base, func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: "slow", Effect: corev1.TaintEffectPreferNoSchedule}}
		}), nil, []watch.Owner{a, tolerant}},
		{"the same taint, added again later", with(base, func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: "gone", Effect: corev1.TaintEffectNoExecute, TimeAdded: &metav1.Time{}}}
		}), with(base, func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: "gone", Effect: corev1.TaintEffectNoExecute, TimeAdded: &metav1.Time{Time: metav1.Now().Time}}}
		}), nil, []watch.Owner{a}},
		{"heartbeat", base, with(base, func(n *corev1.Node) {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
		}), nil, []watch.Owner{a, b}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, o := range tc.want {
				assert.True(t, watch.Affects(kmmID, o, tc.old, tc.cur), "%s should be enqueued", o.Key)
			}
			for _, o := range tc.not {
				assert.False(t, watch.Affects(kmmID, o, tc.old, tc.cur), "%s should not be enqueued", o.Key)
			}
		})
	}
	assert.False(t, watch.Affects(kmmID, watch.Owner{Key: a.Key}, nil, base), "an owner without a spec")
}

// TestAffectsOrderedUpgrade: for an owner with a version, its M, W and S
// labels matter on any node (selected or not), and its .ready label where
// M is set; another owner's, or an owner without a version, do not care.
func TestAffectsOrderedUpgrade(t *testing.T) {
	versioned := func(name string, sel map[string]string) watch.Owner {
		o := owner(name, sel)
		o.Spec.ModuleLoader = &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{Version: "v2"}}
		return o
	}
	a := versioned("a", map[string]string{"pool": "a"})
	b := versioned("b", map[string]string{"pool": "a"})
	plain := owner("a", map[string]string{"pool": "a"})
	idA := kmmID.Owner("drivers", "a")
	m, w, s, ready := idA.VersionModuleLabel(), idA.VersionWorkerPodLabel(), idA.VersionSchedulePodLabel(), idA.ReadyLabel()
	base := node(map[string]string{"pool": "a", m: "v2", w: "v1", ready: ""}, "6.1.0-56-amd64", "boot-1")
	outside := node(map[string]string{"pool": "z", m: "v2"}, "6.1.0-56-amd64", "boot-1")
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Node
		want     bool
	}{
		{"the admin sets M", with(base, func(n *corev1.Node) { delete(n.Labels, m) }), base, true},
		{"the admin changes M", base, with(base, func(n *corev1.Node) { n.Labels[m] = "v3" }), true},
		{"W removed", base, with(base, func(n *corev1.Node) { delete(n.Labels, w) }), true},
		{"S added", base, with(base, func(n *corev1.Node) { n.Labels[s] = "v2" }), true},
		{"on a node the selector leaves out", outside, with(outside, func(n *corev1.Node) { n.Labels[w] = "v2" }), true},
		{"a new node with M", nil, outside, true},
		{".ready goes where M is set", base, with(base, func(n *corev1.Node) { delete(n.Labels, ready) }), true},
		{".ready goes where M is not set", with(base, func(n *corev1.Node) { delete(n.Labels, m) }),
			with(base, func(n *corev1.Node) { delete(n.Labels, m); delete(n.Labels, ready) }), false},
		{"another label", base, with(base, func(n *corev1.Node) { n.Labels["zone"] = "2" }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, watch.Affects(kmmID, a, tc.old, tc.cur))
			if tc.old != nil {
				assert.False(t, watch.Affects(kmmID, b, tc.old, tc.cur), "another owner's labels")
				assert.False(t, watch.Affects(kmmID, plain, tc.old, tc.cur), "an owner without a version")
			}
		})
	}
	// An embedder's keys.
	nic := versioned("nic", map[string]string{"pool": "a"})
	idN := nicID.Owner("drivers", "nic")
	cur := with(base, func(n *corev1.Node) { n.Labels[idN.VersionModuleLabel()] = "v2" })
	assert.True(t, watch.Affects(nicID, nic, base, cur))
	assert.False(t, watch.Affects(kmmID, versioned("nic", map[string]string{"pool": "a"}), base, cur), "not KMM's key")
}

// TestNodePredicate drops what no owner can care about, and with
// domains also their status labels.
func TestNodePredicate(t *testing.T) {
	base := node(map[string]string{"pool": "a"}, "6.1.0-56-amd64", "boot-1")
	update := func(cur *corev1.Node, domains ...identity.Domain) bool {
		return watch.NodePredicate(domains...).Update(event.UpdateEvent{ObjectOld: base, ObjectNew: cur})
	}
	p := watch.NodePredicate()
	assert.True(t, p.Create(event.CreateEvent{Object: base}))
	assert.True(t, p.Delete(event.DeleteEvent{Object: base}))
	assert.True(t, update(with(base, func(n *corev1.Node) { n.Status.NodeInfo.KernelVersion = "6.1.0-57-amd64" })))
	assert.True(t, update(with(base, func(n *corev1.Node) { n.Status.NodeInfo.BootID = "boot-2" })))
	assert.True(t, update(with(base, func(n *corev1.Node) { n.Labels["pool"] = "b" })))
	assert.True(t, update(with(base, func(n *corev1.Node) { delete(n.Labels, "pool") })))
	assert.True(t, update(with(base, func(n *corev1.Node) { n.Spec.Taints = []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoSchedule}} })))
	assert.False(t, update(with(base, func(n *corev1.Node) {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, LastHeartbeatTime: metav1.Now()}}
		n.Status.Images = []corev1.ContainerImage{{Names: []string{"busybox"}}}
		n.ResourceVersion = "42"
	})), "a heartbeat")
	assert.False(t, update(with(base, func(n *corev1.Node) { n.Annotations = map[string]string{"loaded.kmmkit.io/drivers.a": "{}"} })))

	own := with(base, func(n *corev1.Node) {
		o := kmmID.Owner("drivers", "a")
		n.Labels[o.ReadyLabel()], n.Labels[o.VersionReadyLabel()] = "", "v1"
		n.Labels[nicID.Owner("", "nic").ReadyLabel()] = ""
	})
	assert.True(t, update(own), "without domains, status labels pass (a selector may name them)")
	assert.True(t, update(own, kmmID), "the NICDriver label is not KMM's")
	assert.False(t, update(own, kmmID, nicID))
	assert.True(t, update(with(own, func(n *corev1.Node) { n.Labels["pool"] = "b" }), kmmID, nicID), "another label changed too")
	assert.True(t, update(with(base, func(n *corev1.Node) { n.Labels["kmm.node.kubernetes.io/version-module.drivers.a"] = "v2" }), kmmID),
		"KMM's ordered-upgrade label is the user's")
	for _, d := range []identity.Domain{kmmID, nicID} {
		o := d.Owner("drivers", "a")
		for _, key := range []string{o.VersionModuleLabel(), o.VersionWorkerPodLabel(), o.VersionSchedulePodLabel()} {
			assert.True(t, update(with(base, func(n *corev1.Node) { n.Labels[key] = "v2" }), kmmID, nicID),
				"%s: the ordered upgrade steps on it", key)
		}
	}
}

// TestPodOwner maps kmmkit's Pods back to their owner.
func TestPodOwner(t *testing.T) {
	pod := func(ns string, labels map[string]string, refs ...metav1.OwnerReference) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: labels, OwnerReferences: refs}}
	}
	kmmA := kmmID.Owner("drivers", "a")
	key, ok := watch.PodOwner(kmmID, false, pod("drivers", kmmA.WorkerLabels("Load")))
	assert.True(t, ok)
	assert.Equal(t, types.NamespacedName{Namespace: "drivers", Name: "a"}, key)
	key, ok = watch.PodOwner(kmmID, false, pod("drivers", kmmA.BuildLabels("BuildImage", "6.1.0-56-amd64")))
	assert.True(t, ok, "a build Pod")
	assert.Equal(t, "a", key.Name)
	key, ok = watch.PodOwner(kmmID, false, pod("drivers", map[string]string{kmmA.NameLabel(): "a", "kmm.node.kubernetes.io/role": "device-plugin"},
		metav1.OwnerReference{Kind: "DaemonSet", Name: "a-device-plugin-x"}))
	assert.True(t, ok, "KMM's device-plugin Pod")
	assert.Equal(t, "a", key.Name)

	_, ok = watch.PodOwner(kmmID, false, pod("drivers", nicID.Owner("drivers", "a").WorkerLabels("Load")))
	assert.False(t, ok, "another identity's worker")
	_, ok = watch.PodOwner(nicID, false, pod("drivers", kmmA.WorkerLabels("Load")))
	assert.False(t, ok, "KMM's worker is not the NICDriver's")
	_, ok = watch.PodOwner(kmmID, false, pod("drivers", map[string]string{"app": "x"}))
	assert.False(t, ok)

	long := strings.Repeat("n", 70)
	nicLong := nicID.Owner("", long)
	key, ok = watch.PodOwner(nicID, true, pod("nic-system", nicLong.WorkerLabels("Unload"),
		metav1.OwnerReference{Kind: "Other", Name: "x"}, metav1.OwnerReference{Kind: "NICDriver", Name: long}))
	assert.True(t, ok)
	assert.Equal(t, types.NamespacedName{Name: long}, key, "a long name from the owner reference; cluster-scoped: no namespace")
}

// TestDaemonSetOwner: the device plugin DaemonSets map to their owner
// through the same handler (their status gives the counts and the garbage
// collection of old versions).
func TestDaemonSetOwner(t *testing.T) {
	nicA := nicID.Owner("drivers", "a")
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "drivers", Name: "a-device-plugin-x",
		Labels:          map[string]string{nicA.NameLabel(): "a", nicA.RoleLabel(): "device-plugin"},
		OwnerReferences: []metav1.OwnerReference{{Kind: "NICDriver", Name: "a", Controller: ptr.To(true)}}}}
	key, ok := watch.PodOwner(nicID, false, ds)
	assert.True(t, ok)
	assert.Equal(t, types.NamespacedName{Namespace: "drivers", Name: "a"}, key)
	_, ok = watch.PodOwner(kmmID, false, ds)
	assert.False(t, ok, "not KMM's")
}
