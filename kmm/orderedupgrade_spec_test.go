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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

// versionedSpec is nicModule's spec at version v, with an existing image.
func versionedSpec(v string) v1beta1.ModuleSpec {
	s := nicModule().Spec
	s.ModuleLoader.Container.Version = v
	s.ModuleLoader.Container.KernelMappings[0].Build = nil
	return s
}

// TestOrderedUpgradeEmbedder: ReconcileSpec with an embedder's identity
// steps that identity's M, W and S labels (never KMM's), gets a node out
// of a label state KMM's table leaves out, loads only where W is the
// spec's version, and reports the nodes without M honestly.
func TestOrderedUpgradeEmbedder(t *testing.T) {
	ctx := context.Background()
	nic := identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
	h, err := kmmtest.New(kmm.WithIdentity(nic))
	require.NoError(t, err)
	o := nic.Owner("drivers", "nic")
	kmmKeys := identity.Domain{}.Owner("drivers", "nic")
	m, w, s := o.VersionModuleLabel(), o.VersionWorkerPodLabel(), o.VersionSchedulePodLabel()
	for name, l := range map[string]map[string]string{
		"n1": {"nic": "true", m: "v1"},
		"n2": {"nic": "true"},
		"n3": {"nic": "true", m: "v1", s: "v0"},                   // M set, W missing, S on another version: not in KMM's table
		"n4": {"nic": "true", kmmKeys.VersionModuleLabel(): "v1"}, // KMM's key: not this owner's
	} {
		_, err := h.AddNode(ctx, name, k56, l)
		require.NoError(t, err)
	}
	h.Registry.SetExists("registry.example.com/nic:"+k56, "sha256:56")
	obj := kmm.Object{Namespace: "drivers", Name: "nic", Spec: versionedSpec("v1"), Generation: 1,
		Ref: &corev1.ObjectReference{Kind: "NICDriver", Namespace: "drivers", Name: "nic"}}
	labels := func(node string) map[string]string {
		n, err := h.Clientset.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		require.NoError(t, err)
		return n.Labels
	}
	pass := func() kmm.Result {
		res, err := h.Reconciler().ReconcileSpec(ctx, obj)
		require.NoError(t, err)
		obj.Status = res.Status
		return res
	}

	res := pass()
	assert.Equal(t, "v1", labels("n1")[w], "M=v1, W missing: add W")
	assert.NotContains(t, labels("n1"), s, "one step a pass")
	assert.NotContains(t, labels("n3"), s, "KMM would leave n3 stuck; S goes")
	assert.NotContains(t, labels("n3"), w)
	assert.NotContains(t, labels("n4"), kmmKeys.VersionWorkerPodLabel(), "KMM's keys are not this owner's")
	assert.NotContains(t, labels("n4"), w)
	assert.Positive(t, res.RequeueAfter, "a step is left to do")
	assert.Equal(t, []string{"n1"}, keys(h.Loader.LoadedFor(o)), "loaded where W is the spec's version only")
	c := meta.FindStatusCondition(obj.Status.Conditions, kmm.ConditionLoaded)
	require.NotNil(t, c)
	assert.Equal(t, string(reason.VersionStepping), c.Reason, c.Message)
	assert.Contains(t, c.Message, "loaded on 1 of 2 desired node(s); not on 1: n3 (VersionStepping)")
	assert.Contains(t, c.Message, "2 selected node(s) have no "+m+" label, so nothing is loaded there")
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 4, DesiredNumber: 2, AvailableNumber: 1}, obj.Status.ModuleLoader)
	events := strings.Join(h.Events(), "\n")
	assert.Contains(t, events, "Normal VersionLabelAdded node n1: set "+w+"=v1 ("+m+` is "v1")`)
	assert.Contains(t, events, "Normal VersionLabelRemoved node n3: removed "+s+" ("+m+` is "v1"; M present, W missing, S different is not in KMM's table`)

	for i := 0; i < 4; i++ {
		pass()
	}
	for _, n := range []string{"n1", "n3"} {
		assert.Equal(t, "v1", labels(n)[w], n)
		assert.Equal(t, "v1", labels(n)[s], n)
	}
	assert.Equal(t, []string{"n1", "n3"}, keys(h.Loader.LoadedFor(o)))
	c = meta.FindStatusCondition(obj.Status.Conditions, kmm.ConditionLoaded)
	assert.Equal(t, metav1.ConditionTrue, c.Status, c.Message)

	// A steady pass writes nothing.
	before := len(h.Writes())
	res = pass()
	assert.Equal(t, before, len(h.Writes()), "no write: %v", h.Writes()[before:])
	assert.GreaterOrEqual(t, res.RequeueAfter, time.Minute, "no quick requeue once every node is at M")
}

// TestOrderedUpgradeNoLabelledNode: a versioned owner whose selected
// nodes have no M label loads nothing, and Loaded says so, naming the
// label.
func TestOrderedUpgradeNoLabelledNode(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	mod := nicModule()
	mod.Spec = versionedSpec("v1")
	require.NoError(t, h.CreateModule(ctx, mod))
	m := settled(t, h)
	o := identity.Domain{}.Owner("drivers", "nic")
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, reason.NoVersionModuleLabel,
		"no selected node has the "+o.VersionModuleLabel()+` label: set it to "v1" on the nodes that should load this version`)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 0, AvailableNumber: 0}, m.Status.ModuleLoader)
	assert.Empty(t, h.Loader.History(), "nothing loaded")
}

// TestOrderedUpgradeDevicePluginGuard: nodes whose M was removed lose W
// only where no device-plugin or DRA Pod of the owner is (in its
// namespace, with its name and role labels); the Pods are listed once a
// pass however many nodes ask, and not at all when none does. A failed
// list holds every removal and is the pass's error; a node that changed
// under a step (a conflict) is retried, not an error.
func TestOrderedUpgradeDevicePluginGuard(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	o := identity.Domain{}.Owner("drivers", "nic")
	w := o.VersionWorkerPodLabel()
	for _, n := range []string{"n1", "n2", "n3"} {
		node, err := h.Clientset.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		require.NoError(t, err)
		node.Labels[w] = "v1" // M missing, W present, S missing: delete W (G1)
		_, err = h.Clientset.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	pod := func(name, ns, node string, l map[string]string) {
		_, err := h.Clientset.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: l},
			Spec: corev1.PodSpec{NodeName: node}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pod("dp-n1", "drivers", "n1", map[string]string{o.NameLabel(): "nic", o.RoleLabel(): identity.RoleDRA})
	pod("other-n2", "drivers", "n2", map[string]string{o.NameLabel(): "other", o.RoleLabel(): identity.RoleDevicePlugin})
	pod("elsewhere-n2", "elsewhere", "n2", map[string]string{o.NameLabel(): "nic", o.RoleLabel(): identity.RoleDevicePlugin})
	pod("worker-n3", "drivers", "n3", map[string]string{o.NameLabel(): "nic"})
	mod := nicModule()
	mod.Spec = versionedSpec("v1")
	require.NoError(t, h.CreateModule(ctx, mod))
	listsOfPods := func() int {
		n := 0
		for _, a := range h.Clientset.Actions() {
			if a.GetVerb() == "list" && a.GetResource().Resource == "pods" && strings.Contains(fmtRestrictions(a), o.RoleLabel()) {
				n++
			}
		}
		return n
	}
	labels := func(node string) map[string]string {
		n, err := h.Clientset.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		require.NoError(t, err)
		return n.Labels
	}

	// The list fails: nothing is removed, the pass says why.
	h.Clientset.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if strings.Contains(fmtRestrictions(a), o.RoleLabel()) {
			return true, nil, errors.New("etcd is down")
		}
		return false, nil, nil
	})
	_, err := h.Reconcile(ctx, "drivers", "nic")
	require.ErrorContains(t, err, "ordered upgrade of Module drivers/nic: listing its device-plugin and DRA Pods: etcd is down")
	for _, n := range []string{"n1", "n2", "n3"} {
		assert.Equal(t, "v1", labels(n)[w], n)
	}
	h.Clientset.ReactionChain = h.Clientset.ReactionChain[1:]

	// A conflict on n2: retried on a later pass.
	conflicts := 0
	h.Clientset.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if p := a.(k8stesting.PatchAction); p.GetName() == "n2" && strings.Contains(string(p.GetPatch()), w) && conflicts == 0 {
			conflicts++
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "n2", errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	before := listsOfPods()
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err, "a conflict is no error")
	assert.Equal(t, 1, listsOfPods()-before, "one list for three nodes")
	assert.Equal(t, "v1", labels("n1")[w], "the owner's DRA Pod holds n1")
	assert.Equal(t, "v1", labels("n2")[w], "conflict: not applied")
	assert.NotContains(t, labels("n3"), w, "no device-plugin Pod on n3 (a worker is none)")
	assert.Positive(t, res.RequeueAfter)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, reason.NoVersionModuleLabel,
		"2 selected node(s) lost their "+o.VersionModuleLabel()+" label and are being unloaded",
		"n1 ("+string(reason.WaitingForDevicePlugin)+")", "n2 ("+string(reason.VersionStepping)+")")
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 0, AvailableNumber: 0}, m.Status.ModuleLoader,
		"nodes without M are not desired, even while the module is still loaded there")

	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.NotContains(t, labels("n2"), w, "the Pods of another owner or namespace do not hold n2")
	assert.Equal(t, "v1", labels("n1")[w])

	require.NoError(t, h.Clientset.CoreV1().Pods("drivers").Delete(ctx, "dp-n1", metav1.DeleteOptions{}))
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.NotContains(t, labels("n1"), w)
	m, err = h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assertCond(t, m, kmm.ConditionLoaded, metav1.ConditionFalse, reason.NoVersionModuleLabel, o.VersionModuleLabel())

	before = listsOfPods()
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, before, listsOfPods(), "no node asks: no list")
}

// fmtRestrictions is the label selector of a list action.
func fmtRestrictions(a k8stesting.Action) string {
	if l, ok := a.(k8stesting.ListAction); ok {
		return l.GetListRestrictions().Labels.String()
	}
	return ""
}

// TestOrderedUpgradeCordonedNode: a node cordoned for its upgrade keeps
// the old version (kmmkit keeps modules on unschedulable nodes) until its
// W goes; then it unloads, and, as in KMM, loads the new version only
// once it is schedulable again.
func TestOrderedUpgradeCordonedNode(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	o := identity.Domain{}.Owner("drivers", "nic")
	setLabel := func(node, key, v string) {
		n, err := h.Clientset.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		require.NoError(t, err)
		n.Labels[key] = v
		_, err = h.Clientset.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	cordon := func(on bool) {
		n, err := h.Clientset.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		require.NoError(t, err)
		n.Spec.Taints = nil
		if on {
			n.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}}
		}
		_, err = h.Clientset.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	setLabel("n1", o.VersionModuleLabel(), "v1")
	mod := nicModule()
	mod.Spec = versionedSpec("v1")
	mod.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = "registry.example.com/nic:v1-${KERNEL_FULL_VERSION}"
	h.Registry.SetExists("registry.example.com/nic:v1-"+k56, "sha256:v1")
	h.Registry.SetExists("registry.example.com/nic:v2-"+k56, "sha256:v2")
	require.NoError(t, h.CreateModule(ctx, mod))
	settled(t, h)
	require.Equal(t, "registry.example.com/nic:v1-"+k56, h.Loader.LoadedOn("drivers", "nic")["n1"].ContainerImage)

	cordon(true)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	m.Spec = versionedSpec("v2")
	m.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = "registry.example.com/nic:v2-${KERNEL_FULL_VERSION}"
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	settled(t, h)
	assert.Contains(t, h.Loader.LoadedOn("drivers", "nic"), "n1", "cordoned, W=v1: v1 stays")

	setLabel("n1", o.VersionModuleLabel(), "v2")
	settled(t, h)
	n, err := h.Clientset.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "v2", n.Labels[o.VersionWorkerPodLabel()])
	assert.Equal(t, "v2", n.Labels[o.VersionSchedulePodLabel()])
	assert.NotContains(t, h.Loader.LoadedOn("drivers", "nic"), "n1", "W went: v1 unloaded although cordoned; v2 waits")

	cordon(false)
	settled(t, h)
	assert.Equal(t, "registry.example.com/nic:v2-"+k56, h.Loader.LoadedOn("drivers", "nic")["n1"].ContainerImage)
}
