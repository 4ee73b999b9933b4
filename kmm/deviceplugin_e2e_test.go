package kmm_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
)

// dpKubelet plays the DaemonSet controller and the kubelet for the device
// plugin: a Ready Pod of ds on each of nodes, and the DaemonSet's status.
func dpKubelet(t *testing.T, cs kubernetes.Interface, ds *appsv1.DaemonSet, nodes []string) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: ds.Name + "-" + n, Namespace: ds.Namespace, Labels: ds.Spec.Template.Labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: ptr.To(true)}}},
			Spec: *ds.Spec.Template.Spec.DeepCopy(),
		}
		p.Spec.NodeName = n
		p, err := cs.CoreV1().Pods(ds.Namespace).Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		_, err = cs.CoreV1().Pods(ds.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	setDSStatus(t, cs, ds, int32(len(nodes)))
}

func setDSStatus(t *testing.T, cs kubernetes.Interface, ds *appsv1.DaemonSet, n int32) {
	t.Helper()
	ctx := context.Background()
	cur, err := cs.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
	require.NoError(t, err)
	cur.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: n, CurrentNumberScheduled: n, NumberReady: n, NumberAvailable: n,
		UpdatedNumberScheduled: n, ObservedGeneration: cur.Generation}
	_, err = cs.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// TestDevicePluginEndToEnd runs a Module with a device plugin on three
// nodes of a real kube-apiserver (the test plays the kubelet and the
// DaemonSet controller; no controller-manager runs): the DaemonSet as KMM
// makes it, stored with the API server's defaults and left alone on a
// steady pass; the target and ready labels; the counts; a new version's
// DaemonSet and the collection of the old one; and on deletion, the
// DaemonSet deleted before any unload worker Pod, which waits for the
// device plugin Pods to go.
func TestDevicePluginEndToEnd(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	ctx := context.Background()
	testenv.InstallCRD(t, cfg, v1beta1.CRD())
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	run := fmt.Sprintf("dp%d", rand.Uint32()%100000)
	ns := "kmmkit-" + run
	testenv.Namespace(t, cs, ns)
	selected := []string{run + "-n1", run + "-n2", run + "-n3"}
	// The administrator asks for version v1 on every node (ordered
	// upgrade: the version-module label).
	M := identity.Domain{}.Owner(ns, "nic").VersionModuleLabel()
	for _, n := range selected {
		testenv.ReadyNode(t, cs, n, map[string]string{"kmmkit-dp": run, M: "v1"}, k56, n+"-boot1")
	}
	testenv.ReadyNode(t, cs, run+"-other", nil, k56, "other-boot1")

	checker := registryfake.New()
	image := "registry.example.com/" + run + "/nic:" + k56
	checker.SetExists(image, "sha256:56")
	pl, err := loader.NewPodLoader(cs, "quay.io/kmmkit/kmm:e2e")
	require.NoError(t, err)
	modules := kmm.NewModuleClient(dyn)
	r, err := kmm.NewReconciler(cs, kmm.WithModuleClient(modules), kmm.WithImageChecker(checker), kmm.WithNodeLoader(pl),
		kmm.WithLogger(testr.New(t)))
	require.NoError(t, err)
	e := &e2e{t: t, cs: cs, modules: modules, r: r, ns: ns, loads: map[string][]string{}}

	mod := nicModule()
	mod.Namespace = ns
	mod.Spec.Selector = map[string]string{"kmmkit-dp": run}
	mod.Spec.ModuleLoader.Container.Version = "v1"
	mod.Spec.ModuleLoader.Container.KernelMappings = []v1beta1.KernelMapping{{Literal: k56, ContainerImage: image}}
	mod.Spec.DevicePlugin = &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "registry.example.com/nic-dp:1",
		Env: []corev1.EnvVar{{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}},
		Volumes: []corev1.Volume{{Name: "dev", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/dev"}}}}}
	_, err = modules.Create(ctx, mod)
	require.NoError(t, err)
	require.True(t, e.settle("nic"))

	o := identity.Domain{}.Owner(ns, "nic")
	S := o.VersionSchedulePodLabel()
	list := func() []appsv1.DaemonSet {
		l, err := cs.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		return l.Items
	}
	dss := list()
	require.Len(t, dss, 1)
	ds := dss[0]
	lbl := map[string]string{"kmm.node.kubernetes.io/module.name": "nic", "kmm.node.kubernetes.io/role": "device-plugin", S: "v1"}
	assert.Equal(t, "nic-device-plugin-", ds.GenerateName)
	assert.Equal(t, lbl, ds.Spec.Selector.MatchLabels)
	assert.Equal(t, lbl, ds.Spec.Template.Labels)
	for k, v := range lbl {
		assert.Equal(t, v, ds.Labels[k], k)
	}
	require.Len(t, ds.OwnerReferences, 1)
	assert.Equal(t, "Module", ds.OwnerReferences[0].Kind)
	assert.True(t, *ds.OwnerReferences[0].Controller)
	spec := ds.Spec.Template.Spec
	assert.Equal(t, map[string]string{o.ReadyLabel(): "", o.DevicePluginTargetLabel(): "", S: "v1"}, spec.NodeSelector)
	assert.Equal(t, "system-node-critical", spec.PriorityClassName)
	require.Len(t, spec.Containers, 1)
	assert.Equal(t, "device-plugin", spec.Containers[0].Name)
	assert.True(t, *spec.Containers[0].SecurityContext.Privileged)
	assert.Equal(t, []corev1.VolumeMount{{Name: "kubelet-device-plugins", MountPath: "/var/lib/kubelet/device-plugins"}}, spec.Containers[0].VolumeMounts)
	require.Len(t, spec.Volumes, 2)
	assert.Equal(t, "/var/lib/kubelet/device-plugins", spec.Volumes[0].HostPath.Path)
	assert.Equal(t, corev1.HostPathDirectory, *spec.Volumes[0].HostPath.Type)
	assert.Equal(t, "dev", spec.Volumes[1].Name)
	for _, n := range selected {
		labels := e.node(n).Labels
		assert.Contains(t, labels, o.ReadyLabel(), "the module is loaded on %s", n)
		assert.Contains(t, labels, o.DevicePluginTargetLabel(), n)
		assert.NotContains(t, labels, o.DevicePluginReadyLabel(), "no Pod yet on %s", n)
	}
	assert.NotContains(t, e.node(run+"-other").Labels, o.DevicePluginTargetLabel())

	// The ordered upgrade let v1's device plugin run there (S); the
	// kubelet: Ready Pods.
	for _, n := range selected {
		assert.Equal(t, "v1", e.node(n).Labels[S], n)
	}
	dpKubelet(t, cs, &ds, selected)
	require.True(t, e.settle("nic"))
	m, err := modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 3}, m.Status.DevicePlugin)
	c := meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionDevicePluginReady)
	require.NotNil(t, c)
	assert.Equal(t, metav1.ConditionTrue, c.Status, c.Message)
	assert.Equal(t, string(reason.DevicePluginReady), c.Reason)
	for _, n := range selected {
		assert.Contains(t, e.node(n).Labels, o.DevicePluginReadyLabel(), n)
	}

	// A steady pass writes nothing: not the Module, the DaemonSet (whose
	// stored form has the API server's defaults) or a node.
	rvs := map[string]string{"module": m.ResourceVersion, "ds": list()[0].ResourceVersion}
	for _, n := range selected {
		rvs[n] = e.node(n).ResourceVersion
	}
	_, err = r.Reconcile(ctx, m)
	require.NoError(t, err)
	m, err = modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	after := map[string]string{"module": m.ResourceVersion, "ds": list()[0].ResourceVersion}
	for _, n := range selected {
		after[n] = e.node(n).ResourceVersion
	}
	assert.Equal(t, rvs, after, "no write on a steady pass")

	// n2's Pod stops being Ready: its ready label goes, the condition
	// names it.
	p, err := cs.CoreV1().Pods(ns).Get(ctx, ds.Name+"-"+run+"-n2", metav1.GetOptions{})
	require.NoError(t, err)
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.True(t, e.settle("nic"))
	assert.NotContains(t, e.node(run+"-n2").Labels, o.DevicePluginReadyLabel())
	m, err = modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	c = meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionDevicePluginReady)
	assert.Equal(t, string(reason.DevicePluginNotReady), c.Reason)
	assert.Contains(t, c.Message, run+"-n2 (Pod "+p.Name+" is not Ready)")
	p, err = cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
	require.NoError(t, err)
	p.Status.Conditions[0].Status = corev1.ConditionTrue
	_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)

	// Version v2 (ordered upgrade): a second DaemonSet. Each node's S
	// goes first, so v1's device plugin leaves it (the test plays the
	// DaemonSet controller), then the module is unloaded and v2 loaded,
	// then S=v2. v1's DaemonSet stays while it schedules Pods, and goes
	// once it schedules none.
	for _, n := range selected {
		_, err := cs.CoreV1().Nodes().Patch(ctx, n, "application/merge-patch+json",
			[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"v2"}}}`, M)), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	m, err = modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	m.Spec.ModuleLoader.Container.Version = "v2"
	_, err = modules.Update(ctx, m)
	require.NoError(t, err)
	upgraded := func() bool {
		for _, n := range selected {
			if e.node(n).Labels[S] != "v2" {
				return false
			}
		}
		return true
	}
	for i := 0; i < 60 && !upgraded(); i++ {
		m, err := modules.Get(ctx, ns, "nic")
		require.NoError(t, err)
		_, err = r.Reconcile(ctx, m)
		require.NoError(t, err)
		e.kubelet()
		for _, n := range selected {
			if e.node(n).Labels[S] != "v1" {
				err := cs.CoreV1().Pods(ns).Delete(ctx, ds.Name+"-"+n, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
				require.True(t, err == nil || apierrors.IsNotFound(err), "%v", err)
			}
		}
	}
	require.True(t, upgraded(), "every node moved to v2")
	for _, n := range selected {
		assert.Equal(t, []string{"Load", "Unload", "Load"}, e.loads[n], n)
	}
	dss = list()
	require.Len(t, dss, 2)
	var v2 appsv1.DaemonSet
	for _, d := range dss {
		if d.Labels[S] == "v2" {
			v2 = d
		}
	}
	require.NotEmpty(t, v2.Name)
	assert.Equal(t, "v2", v2.Spec.Template.Spec.NodeSelector[S])
	dpKubelet(t, cs, &v2, selected)
	setDSStatus(t, cs, &ds, 0)
	require.True(t, e.settle("nic"))
	dss = list()
	require.Len(t, dss, 1, "the v1 DaemonSet is collected")
	assert.Equal(t, v2.Name, dss[0].Name)

	// Delete: the DaemonSet goes on the first pass, and no node unloads
	// while its device plugin Pod (v2's, left for the garbage collector)
	// is there.
	require.NoError(t, dyn.Resource(kmm.ModuleGVR).Namespace(ns).Delete(ctx, "nic", metav1.DeleteOptions{}))
	m, err = modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	res, err := r.Reconcile(ctx, m)
	require.NoError(t, err)
	assert.False(t, res.Done)
	assert.Empty(t, list(), "the device plugin DaemonSets are deleted first")
	workers, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: loader.LabelWorkerAction + "=Unload"})
	require.NoError(t, err)
	assert.Empty(t, workers.Items, "no unload while the device plugin Pods run")
	for _, n := range selected {
		assert.NotContains(t, e.node(n).Labels, o.DevicePluginTargetLabel(), n)
	}
	// The garbage collector deletes the Pods: the nodes unload.
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: o.RoleLabel() + "=device-plugin"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 3)
	for _, p := range pods.Items {
		require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}))
	}
	assert.False(t, e.settle("nic"), "the Module is gone in the end")
	for _, n := range selected {
		assert.Equal(t, "Unload", e.loads[n][len(e.loads[n])-1], "%s unloaded", n)
		labels := e.node(n).Labels
		assert.NotContains(t, labels, o.DevicePluginReadyLabel(), n)
		assert.NotContains(t, labels, o.ReadyLabel(), n)
	}
}
