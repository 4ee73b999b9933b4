package kmm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

var nicOwner = identity.Domain{}.Owner("drivers", "nic")

// dpModule is nicModule with a device plugin.
func dpModule(version string) *v1beta1.Module {
	m := nicModule()
	m.Spec.ModuleLoader.Container.Version = version
	m.Spec.DevicePlugin = &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "registry.example.com/nic-dp:1"}}
	return m
}

// dpCluster is cluster whose fake API server names objects from their
// generateName, as the real one does.
func dpCluster(t *testing.T, opts ...kmm.Option) *kmmtest.Harness {
	t.Helper()
	h := cluster(t, opts...)
	n := 0
	h.Clientset.PrependReactor("create", "daemonsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ds := a.(k8stesting.CreateAction).GetObject().(*appsv1.DaemonSet)
		if ds.Name == "" && ds.GenerateName != "" {
			n++
			ds.Name = fmt.Sprintf("%s%05d", ds.GenerateName, n)
			ds.UID = types.UID(ds.Name)
		}
		return false, nil, nil
	})
	return h
}

func daemonSets(t *testing.T, h *kmmtest.Harness) []appsv1.DaemonSet {
	t.Helper()
	l, err := h.Clientset.AppsV1().DaemonSets("drivers").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return l.Items
}

func nodeLabels(t *testing.T, h *kmmtest.Harness, name string) map[string]string {
	t.Helper()
	n, err := h.Clientset.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return n.Labels
}

// setNodeLabel sets (v != nil) or removes a node label, as another
// controller would.
func setNodeLabel(t *testing.T, h *kmmtest.Harness, node, key string, v *string) {
	t.Helper()
	ctx := context.Background()
	n, err := h.Clientset.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	require.NoError(t, err)
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	if v == nil {
		delete(n.Labels, key)
	} else {
		n.Labels[key] = *v
	}
	_, err = h.Clientset.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// dpPod makes a Pod of ds on node, as the DaemonSet controller and the
// kubelet would.
func dpPod(t *testing.T, h *kmmtest.Harness, ds *appsv1.DaemonSet, name, node string, ready bool) *corev1.Pod {
	t.Helper()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ds.Namespace, Labels: ds.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: ptr.To(true)}}},
		Spec:   corev1.PodSpec{NodeName: node, Containers: ds.Spec.Template.Spec.Containers},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
	p, err := h.Clientset.CoreV1().Pods(ds.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
	require.NoError(t, err)
	return p
}

func dpSettled(t *testing.T, h *kmmtest.Harness) *v1beta1.Module {
	t.Helper()
	ctx := context.Background()
	_, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	return m
}

// KMM: DevicePluginReconciler_setDevicePluginAsDesired "should work as
// expected" (moduleLoader is defined, with an init container), "should add
// additional volumes", "should add module version"; handleDevicePlugin
// "new daemonset".
func TestDevicePluginDaemonSetAsKMM(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	m := dpModule("v1")
	m.UID = "module-uid"
	mount := corev1.VolumeMount{Name: "some-dp-volume-mount", MountPath: "/some/path"}
	vol := corev1.Volume{Name: "test-volume", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/dev/x"}}}
	res := corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")}}
	env := []corev1.EnvVar{{Name: "ENV_KEY", Value: "ENV_VALUE"}}
	tol := corev1.Toleration{Key: "test-key", Value: "test-value", Effect: corev1.TaintEffectNoExecute}
	c := v1beta1.CommonContainerSpec{Args: []string{"some", "args"}, Command: []string{"some", "command"}, Env: env,
		Image: "registry.example.com/nic-dp:1", Resources: res, VolumeMounts: []corev1.VolumeMount{mount}}
	main := c
	main.ImagePullPolicy = corev1.PullIfNotPresent
	m.Spec.DevicePlugin = &v1beta1.DevicePluginSpec{InitContainer: &c, Container: main, ServiceAccountName: "some-service-account",
		Volumes: []corev1.Volume{vol}, AutomountServiceAccountToken: ptr.To(false)}
	m.Spec.ImageRepoSecret = &corev1.LocalObjectReference{Name: "pull-secret-name"}
	m.Spec.Tolerations = []corev1.Toleration{tol}
	require.NoError(t, h.CreateModule(ctx, m))
	got := dpSettled(t, h)

	dss := daemonSets(t, h)
	require.Len(t, dss, 1)
	ds := dss[0]
	lbl := map[string]string{"kmm.node.kubernetes.io/module.name": "nic", "kmm.node.kubernetes.io/role": "device-plugin",
		"beta.kmm.node.kubernetes.io/version-schedule-pod.drivers.nic": "v1"}
	assert.Equal(t, "nic-device-plugin-", ds.GenerateName)
	assert.True(t, strings.HasPrefix(ds.Name, "nic-device-plugin-"))
	assert.Equal(t, "drivers", ds.Namespace)
	assert.Equal(t, lbl, ds.Labels)
	assert.Equal(t, lbl, ds.Spec.Selector.MatchLabels)
	assert.Equal(t, lbl, ds.Spec.Template.Labels)
	assert.Empty(t, ds.Spec.Template.Finalizers, "no node-labeler finalizer: the pass keeps the ready label")
	assert.Equal(t, []metav1.OwnerReference{{APIVersion: "kmm.sigs.x-k8s.io/v1beta1", Kind: "Module", Name: "nic", UID: got.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}, ds.OwnerReferences)
	dir := corev1.HostPathDirectory
	want := corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "device-plugin-init", Image: c.Image, Args: c.Args, Command: c.Command, Env: env,
			Resources: res, SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}, VolumeMounts: []corev1.VolumeMount{mount}}},
		Containers: []corev1.Container{{Name: "device-plugin", Image: c.Image, ImagePullPolicy: corev1.PullIfNotPresent, Args: c.Args,
			Command: c.Command, Env: env, Resources: res, SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
			VolumeMounts: []corev1.VolumeMount{{Name: "kubelet-device-plugins", MountPath: "/var/lib/kubelet/device-plugins"}, mount}}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull-secret-name"}},
		NodeSelector: map[string]string{"kmm.node.kubernetes.io/drivers.nic.ready": "", "kmm.node.kubernetes.io/drivers.nic.device-plugin-target": "",
			"beta.kmm.node.kubernetes.io/version-schedule-pod.drivers.nic": "v1"},
		PriorityClassName:  "system-node-critical",
		ServiceAccountName: "some-service-account",
		Volumes: []corev1.Volume{{Name: "kubelet-device-plugins", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: "/var/lib/kubelet/device-plugins", Type: &dir}}}, vol},
		Tolerations:                  []corev1.Toleration{tol},
		AutomountServiceAccountToken: ptr.To(false),
	}
	assert.Equal(t, want, ds.Spec.Template.Spec)

	// The device plugin's status and condition: no Pod yet anywhere.
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3}, got.Status.DevicePlugin)
	dc := cond(t, got, kmm.ConditionDevicePluginReady)
	assert.Equal(t, metav1.ConditionFalse, dc.Status)
	assert.Equal(t, string(reason.DevicePluginNotReady), dc.Reason)
	assert.Equal(t, "the device plugin is Ready on 0 of 3 targeted node(s); not on 3: n1 (the module is not loaded there yet), "+
		"n2 (the module is not loaded there yet), n3 (the module is not loaded there yet)", dc.Message)
}

// KMM: setDevicePluginAsDesired "moduleLoader is nil": the node selector
// is exactly spec.selector, and no version label.
func TestDevicePluginWithoutModuleLoader(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	m := dpModule("")
	m.Spec.ModuleLoader = nil
	require.NoError(t, h.CreateModule(ctx, m))
	got := dpSettled(t, h)
	dss := daemonSets(t, h)
	require.Len(t, dss, 1)
	assert.Equal(t, map[string]string{"nic": "true"}, dss[0].Spec.Template.Spec.NodeSelector)
	assert.Equal(t, map[string]string{"kmm.node.kubernetes.io/module.name": "nic", "kmm.node.kubernetes.io/role": "device-plugin"}, dss[0].Labels)
	assert.Nil(t, dss[0].Spec.Template.Spec.ImagePullSecrets, "no imageRepoSecret, no pull secret")
	assert.Nil(t, got.Status.ModuleLoader)
	// Without a moduleLoader a node needs no module: one Ready Pod makes
	// the condition name the two others only.
	dpPod(t, h, &dss[0], "dp-n1", "n1", true)
	got = dpSettled(t, h)
	dc := cond(t, got, kmm.ConditionDevicePluginReady)
	assert.Equal(t, string(reason.DevicePluginNotReady), dc.Reason)
	assert.Equal(t, "the device plugin is Ready on 1 of 3 targeted node(s); not on 2: n2 (no Pod), n3 (no Pod)", dc.Message)
	assert.Contains(t, nodeLabels(t, h, "n1"), nicOwner.DevicePluginReadyLabel())
}

// KMM: handleDevicePluginTargetLabels "should add target label to
// schedulable node", "should remove target label from unschedulable node"
// (dcc567e: a cordoned node must lose it, or a drain never evicts the
// device plugin).
func TestDevicePluginTargetLabel(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	target := nicOwner.DevicePluginTargetLabel()
	for _, n := range []string{"n1", "n2", "n3"} {
		assert.Equal(t, "", nodeLabels(t, h, n)[target], n)
		assert.Contains(t, nodeLabels(t, h, n), target, n)
	}
	assert.NotContains(t, nodeLabels(t, h, "other"), target, "not selected")

	// Cordon n2: the label goes, with one merge patch.
	n, err := h.Clientset.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
	require.NoError(t, err)
	n.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}}
	_, err = h.Clientset.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	require.NoError(t, err)
	before := len(h.Clientset.Actions())
	got := dpSettled(t, h)
	assert.NotContains(t, nodeLabels(t, h, "n2"), target)
	var patches []string
	for _, a := range h.Clientset.Actions()[before:] {
		if p, ok := a.(k8stesting.PatchAction); ok && a.GetResource().Resource == "nodes" {
			assert.Equal(t, types.MergePatchType, p.GetPatchType())
			patches = append(patches, p.GetName()+" "+string(p.GetPatch()))
		}
	}
	assert.Contains(t, patches, `n2 {"metadata":{"labels":{"kmm.node.kubernetes.io/drivers.nic.device-plugin-target":null}}}`)
	assert.Equal(t, int32(2), got.Status.DevicePlugin.DesiredNumber, "the cordoned node is not targeted")
}

// KMM: PodNodeLabelReconciler "should label the node when a Pod is ready",
// "should unlabel the node when a Pod is not ready", "should NOT unlabel
// the node when a Pod is not ready but there is a new running pod",
// "should NOT label or unlabel when the Pod has no .spec.nodeName", and a
// Pod being deleted unlabels.
func TestDevicePluginReadyLabel(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	ready := nicOwner.DevicePluginReadyLabel()
	for _, n := range []string{"n1", "n2", "n3"} {
		setNodeLabel(t, h, n, nicOwner.ReadyLabel(), ptr.To("")) // the loader's
	}
	ds := daemonSets(t, h)[0]
	p1 := dpPod(t, h, &ds, "dp-n1", "n1", true)
	dpPod(t, h, &ds, "dp-n2", "n2", false)
	dpPod(t, h, &ds, "dp-pending", "", true)
	got := dpSettled(t, h)
	assert.Contains(t, nodeLabels(t, h, "n1"), ready)
	assert.NotContains(t, nodeLabels(t, h, "n2"), ready, "not Ready")
	assert.NotContains(t, nodeLabels(t, h, "n3"), ready)
	dc := cond(t, got, kmm.ConditionDevicePluginReady)
	assert.Equal(t, "the device plugin is Ready on 1 of 3 targeted node(s); not on 2: n2 (Pod dp-n2 is not Ready), n3 (no Pod)", dc.Message)

	// n1's Pod turns not Ready while a new Ready one runs there: the
	// label stays.
	dpPod(t, h, &ds, "dp-n1-new", "n1", true)
	p1.Status.Conditions[0].Status = corev1.ConditionFalse
	_, err := h.Clientset.CoreV1().Pods("drivers").UpdateStatus(ctx, p1, metav1.UpdateOptions{})
	require.NoError(t, err)
	dpSettled(t, h)
	assert.Contains(t, nodeLabels(t, h, "n1"), ready)

	// The new one is being deleted: the label goes at once.
	p, err := h.Clientset.CoreV1().Pods("drivers").Get(ctx, "dp-n1-new", metav1.GetOptions{})
	require.NoError(t, err)
	p.DeletionTimestamp = ptr.To(metav1.Now())
	_, err = h.Clientset.CoreV1().Pods("drivers").Update(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	dpSettled(t, h)
	assert.NotContains(t, nodeLabels(t, h, "n1"), ready)

	// Every Pod Ready: the condition is True.
	for _, name := range []string{"dp-n1", "dp-n2"} {
		require.NoError(t, h.Clientset.CoreV1().Pods("drivers").Delete(ctx, name, metav1.DeleteOptions{}))
	}
	require.NoError(t, h.Clientset.CoreV1().Pods("drivers").Delete(ctx, "dp-n1-new", metav1.DeleteOptions{}))
	for _, n := range []string{"n1", "n2", "n3"} {
		dpPod(t, h, &ds, "dp-"+n+"-2", n, true)
	}
	got = dpSettled(t, h)
	dc = cond(t, got, kmm.ConditionDevicePluginReady)
	assert.Equal(t, metav1.ConditionTrue, dc.Status)
	assert.Equal(t, string(reason.DevicePluginReady), dc.Reason)
	assert.Equal(t, "the device plugin is Ready on all 3 targeted node(s)", dc.Message)

	// A steady pass writes nothing.
	before := h.Writes()
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, before, h.Writes(), "no write on a steady pass")
}

// KMM: getModuleDevicePluginDaemonSets "return only device plugin DSs,
// excluding module-loader and DRA roles" and getExistingDSFromVersion
// "various scenarios"; garbageCollect "no deletes", "former device
// plugin", "former device plugin has desired"; moduleUpdateDevicePluginStatus
// "2 target node, 3 ds" (the available numbers of every DaemonSet add up).
func TestDevicePluginVersionsAndGC(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("v1")))
	dpSettled(t, h)
	dss := daemonSets(t, h)
	require.Len(t, dss, 1)
	v1 := dss[0]
	S := nicOwner.VersionSchedulePodLabel()
	assert.Equal(t, "v1", v1.Labels[S])

	// DaemonSets of other roles are not the device plugin's.
	for _, role := range []string{identity.RoleModuleLoader, identity.RoleDRA} {
		_, err := h.Clientset.AppsV1().DaemonSets("drivers").Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "other-" + role,
			Namespace: "drivers", Labels: map[string]string{nicOwner.NameLabel(): "nic", nicOwner.RoleLabel(): role}}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}

	// v1 schedules Pods on 2 nodes; the Module moves to v2: a second
	// DaemonSet, and v1 stays while it has desired Pods.
	v1.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, NumberAvailable: 2}
	_, err := h.Clientset.AppsV1().DaemonSets("drivers").UpdateStatus(ctx, &v1, metav1.UpdateOptions{})
	require.NoError(t, err)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	m.Spec.ModuleLoader.Container.Version = "v2"
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	got := dpSettled(t, h)
	dss = daemonSets(t, h)
	require.Len(t, dss, 4)
	var v2 *appsv1.DaemonSet
	for i := range dss {
		if dss[i].Labels[S] == "v2" {
			v2 = &dss[i]
		}
	}
	require.NotNil(t, v2)
	assert.Equal(t, "v2", v2.Spec.Template.Spec.NodeSelector[S])
	assert.Equal(t, int32(2), got.Status.DevicePlugin.AvailableNumber)
	v2.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, NumberAvailable: 1}
	_, err = h.Clientset.AppsV1().DaemonSets("drivers").UpdateStatus(ctx, v2, metav1.UpdateOptions{})
	require.NoError(t, err)
	got = dpSettled(t, h)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 3}, got.Status.DevicePlugin,
		"available adds up over both versions")

	// v1 schedules nothing any more: it is deleted; the others stay.
	v1.Status = appsv1.DaemonSetStatus{}
	cur, err := h.Clientset.AppsV1().DaemonSets("drivers").Get(ctx, v1.Name, metav1.GetOptions{})
	require.NoError(t, err)
	cur.Status = appsv1.DaemonSetStatus{}
	_, err = h.Clientset.AppsV1().DaemonSets("drivers").UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	got = dpSettled(t, h)
	var names []string
	for _, ds := range daemonSets(t, h) {
		names = append(names, ds.Name)
	}
	assert.ElementsMatch(t, []string{v2.Name, "other-module-loader", "other-dra"}, names)
	assert.Equal(t, int32(1), got.Status.DevicePlugin.AvailableNumber)
}

// KMM: garbageCollect "should pass if moduleLoader is not defined": without
// a moduleLoader there are no versions, and nothing is collected.
func TestDevicePluginNoGCWithoutModuleLoader(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	m := dpModule("")
	m.Spec.ModuleLoader = nil
	require.NoError(t, h.CreateModule(ctx, m))
	_, err := h.Clientset.AppsV1().DaemonSets("drivers").Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "nic-device-plugin-old",
		Namespace: "drivers", Labels: map[string]string{nicOwner.NameLabel(): "nic", nicOwner.VersionSchedulePodLabel(): "v0"}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	dpSettled(t, h)
	assert.Len(t, daemonSets(t, h), 2)
}

// KMM: Reconcile "cleanup when spec.devicePlugin is nil but existing
// DaemonSets present" and "no-op when spec.devicePlugin is nil and no
// existing DaemonSets".
func TestDevicePluginRemovedFromSpec(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	require.Len(t, daemonSets(t, h), 1)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	m.Spec.DevicePlugin = nil
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	got := dpSettled(t, h)
	assert.Empty(t, daemonSets(t, h))
	for _, n := range []string{"n1", "n2", "n3"} {
		assert.NotContains(t, nodeLabels(t, h, n), nicOwner.DevicePluginTargetLabel(), n)
	}
	assert.Nil(t, got.Status.DevicePlugin)
	assert.Nil(t, meta.FindStatusCondition(got.Status.Conditions, kmm.ConditionDevicePluginReady))

	// Nothing left: a pass reads no DaemonSet and writes nothing.
	before, writes := len(h.Clientset.Actions()), h.Writes()
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, writes, h.Writes())
	for _, a := range h.Clientset.Actions()[before:] {
		assert.NotEqual(t, "daemonsets", a.GetResource().Resource, "%s", a)
	}
}

// KMM: Reconcile "module deletion flow", with the #590 fix: the device
// plugin DaemonSets go first, and a node is unloaded only once its device
// plugin Pod is gone.
func TestDevicePluginDeletedFirst(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	ds := daemonSets(t, h)[0]
	dpPod(t, h, &ds, "dp-n1", "n1", true)
	dpSettled(t, h)
	require.Len(t, h.Loader.LoadedOn("drivers", "nic"), 3)

	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.False(t, res.Done)
	assert.Empty(t, daemonSets(t, h), "the DaemonSet is deleted on the first deleting pass")
	for _, n := range []string{"n1", "n2", "n3"} {
		assert.NotContains(t, nodeLabels(t, h, n), nicOwner.DevicePluginTargetLabel(), n)
	}
	loaded := h.Loader.LoadedOn("drivers", "nic")
	assert.Contains(t, loaded, "n1", "n1 keeps the module while its device plugin Pod is there")
	assert.NotContains(t, loaded, "n2")
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Contains(t, cond(t, m, kmm.ConditionLoaded).Message, "waiting for the device plugin Pods to leave 1 node(s) first: n1")

	// The Pod goes (the garbage collector and the kubelet): n1 unloads.
	require.NoError(t, h.Clientset.CoreV1().Pods("drivers").Delete(ctx, "dp-n1", metav1.DeleteOptions{}))
	res, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	assert.True(t, res.Done)
	assert.Empty(t, h.Loader.LoadedOn("drivers", "nic"))
	assert.NotContains(t, nodeLabels(t, h, "n1"), nicOwner.DevicePluginReadyLabel())
}

// KMM: Reconcile "check error flows" (handleDevicePlugin failed): the API
// server refuses the DaemonSet; the condition says so and the pass fails.
func TestDevicePluginCreateRefused(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	h.Clientset.PrependReactor("create", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("admission webhook denied the request")
	})
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	var err error
	for i := 0; i < 3; i++ {
		_, err = h.Reconcile(ctx, "drivers", "nic")
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "creating the device plugin DaemonSet of Module drivers/nic in namespace drivers: admission webhook denied the request")
	m, gerr := h.Module(ctx, "drivers", "nic")
	require.NoError(t, gerr)
	dc := cond(t, m, kmm.ConditionDevicePluginReady)
	assert.Equal(t, metav1.ConditionUnknown, dc.Status)
	assert.Equal(t, string(reason.DevicePluginFailed), dc.Reason)
	assert.Equal(t, "creating the device plugin DaemonSet of Module drivers/nic in namespace drivers: admission webhook denied the request", dc.Message)
	assert.Equal(t, metav1.ConditionTrue, cond(t, m, kmm.ConditionLoaded).Status, "the module loads all the same")
}

// KMM: handleDevicePlugin "existing daemonset": a changed spec patches the
// one DaemonSet (its labels kept); an unchanged one writes nothing.
func TestDevicePluginSpecChangePatches(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	ds := daemonSets(t, h)[0]
	ds.Labels["team"] = "nic"
	_, err := h.Clientset.AppsV1().DaemonSets("drivers").Update(ctx, &ds, metav1.UpdateOptions{})
	require.NoError(t, err)
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	m.Spec.DevicePlugin.Container.Image = "registry.example.com/nic-dp:2"
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	dpSettled(t, h)
	dss := daemonSets(t, h)
	require.Len(t, dss, 1)
	assert.Equal(t, ds.Name, dss[0].Name)
	assert.Equal(t, "nic", dss[0].Labels["team"], "labels of the DaemonSet are kept")
	assert.Equal(t, "registry.example.com/nic-dp:2", dss[0].Spec.Template.Spec.Containers[0].Image)

	// Someone edits what kmmkit set: the next pass restores it.
	dss[0].Spec.Template.Spec.PriorityClassName = ""
	_, err = h.Clientset.AppsV1().DaemonSets("drivers").Update(ctx, &dss[0], metav1.UpdateOptions{})
	require.NoError(t, err)
	dpSettled(t, h)
	assert.Equal(t, "system-node-critical", daemonSets(t, h)[0].Spec.Template.Spec.PriorityClassName)
}

// spec.dra is refused, not ignored: kmmkit runs no DRA driver. The
// Module is invalid, nothing is done, and the message names the field.
func TestDRARefused(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	m := nicModule()
	m.Spec.DRA = &v1beta1.DRASpec{DriverName: "gpu.example.com", Container: v1beta1.CommonContainerSpec{Image: "dra:v1"}}
	require.NoError(t, h.CreateModule(ctx, m))
	_, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	got, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	c := cond(t, got, kmm.ConditionValid)
	assert.Equal(t, metav1.ConditionFalse, c.Status)
	assert.Equal(t, string(reason.InvalidSpec), c.Reason)
	assert.Contains(t, c.Message, "spec.dra: Forbidden: kmmkit runs no DRA driver: remove spec.dra (use spec.devicePlugin for a device plugin), "+
		"or let KMM's operator drive this Module")
	assert.Empty(t, h.Loader.LoadedOn("drivers", "nic"))
	assert.Empty(t, daemonSets(t, h))

	// An embedded spec: the field path is the caller's.
	res, err := h.Reconciler().ReconcileSpec(ctx, kmm.Object{Namespace: "drivers", Name: "nic", Spec: m.Spec,
		SpecPath: field.NewPath("spec", "module")})
	require.NoError(t, err)
	c = *meta.FindStatusCondition(res.Status.Conditions, kmm.ConditionValid)
	assert.Contains(t, c.Message, "spec.module.dra: Forbidden: kmmkit runs no DRA driver: remove spec.module.dra (use spec.module.devicePlugin")
}

// KMM: PodNodeLabelReconciler "should return an error if we failed to get
// the list of pods": the ready labels are left alone, the target labels
// still set, and the condition says what failed.
func TestDevicePluginPodListRefused(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	h.Clientset.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd timed out")
	})
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	var err error
	for i := 0; i < 3; i++ {
		_, err = h.Reconcile(ctx, "drivers", "nic")
	}
	require.Error(t, err)
	m, gerr := h.Module(ctx, "drivers", "nic")
	require.NoError(t, gerr)
	dc := cond(t, m, kmm.ConditionDevicePluginReady)
	assert.Equal(t, metav1.ConditionUnknown, dc.Status)
	assert.Equal(t, string(reason.DevicePluginFailed), dc.Reason)
	assert.Equal(t, "listing the device plugin Pods of Module drivers/nic in namespace drivers: etcd timed out", dc.Message)
	assert.Contains(t, nodeLabels(t, h, "n1"), nicOwner.DevicePluginTargetLabel())
	assert.Len(t, daemonSets(t, h), 1)
	assert.Equal(t, int32(3), m.Status.DevicePlugin.DesiredNumber)

	// Deleting while the Pods cannot be listed: the DaemonSet goes, but no
	// node unloads (a device plugin Pod may still run there).
	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.Error(t, err)
	assert.False(t, res.Done)
	assert.Empty(t, daemonSets(t, h))
	assert.Len(t, h.Loader.LoadedOn("drivers", "nic"), 3, "nothing unloaded while the device plugin Pods are unknown")
}

// KMM: getModuleDevicePluginDaemonSets counts a DaemonSet without a role
// (an older KMM's) and getExistingDSFromVersion picks it when neither it
// nor the Module has a version: it is adopted, brought in line with its
// immutable selector kept, and then left alone.
func TestDevicePluginAdoptsOlderKMMDaemonSet(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	old := map[string]string{nicOwner.NameLabel(): "nic"}
	_, err := h.Clientset.AppsV1().DaemonSets("drivers").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "nic-device-plugin-old", Namespace: "drivers", Labels: old},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: old},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: old}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	dss := daemonSets(t, h)
	require.Len(t, dss, 1)
	assert.Equal(t, "nic-device-plugin-old", dss[0].Name)
	assert.Equal(t, old, dss[0].Spec.Selector.MatchLabels, "the selector is immutable")
	assert.Equal(t, "device-plugin", dss[0].Spec.Template.Labels[nicOwner.RoleLabel()])
	assert.Equal(t, "registry.example.com/nic-dp:1", dss[0].Spec.Template.Spec.Containers[0].Image)
	before := h.Writes()
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.Equal(t, before, h.Writes())
}

// A memory pressure taint keeps the target label (kmmkit's targeting, as
// for loading); an untolerated NoExecute taint removes it.
func TestDevicePluginTargetUnderPressure(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	taint := func(node string, tt corev1.Taint) {
		n, err := h.Clientset.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		require.NoError(t, err)
		n.Spec.Taints = append(n.Spec.Taints, tt)
		_, err = h.Clientset.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	taint("n1", corev1.Taint{Key: "node.kubernetes.io/memory-pressure", Effect: corev1.TaintEffectNoSchedule})
	taint("n3", corev1.Taint{Key: "maintenance", Effect: corev1.TaintEffectNoExecute})
	dpSettled(t, h)
	assert.Contains(t, nodeLabels(t, h, "n1"), nicOwner.DevicePluginTargetLabel(), "memory pressure")
	assert.NotContains(t, nodeLabels(t, h, "n3"), nicOwner.DevicePluginTargetLabel(), "an untolerated NoExecute taint")
}

// In a namespace being deleted nothing can unload, and the finalizer goes
// at once (TestReconcileDeletionInTerminatingNamespace); the device
// plugin's node labels go too, since nothing else would remove them.
func TestDevicePluginLabelsGoWithATerminatingNamespace(t *testing.T) {
	ctx := context.Background()
	h := dpCluster(t)
	require.NoError(t, h.CreateModule(ctx, dpModule("")))
	dpSettled(t, h)
	ds := daemonSets(t, h)[0]
	dpPod(t, h, &ds, "dp-n1", "n1", true)
	dpSettled(t, h)
	require.Contains(t, nodeLabels(t, h, "n1"), nicOwner.DevicePluginReadyLabel())
	_, err := h.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "drivers"},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}, metav1.CreateOptions{})
	require.NoError(t, err)
	p, err := h.Clientset.CoreV1().Pods("drivers").Get(ctx, "dp-n1", metav1.GetOptions{})
	require.NoError(t, err)
	p.DeletionTimestamp = ptr.To(metav1.Now()) // the namespace controller deletes it
	_, err = h.Clientset.CoreV1().Pods("drivers").Update(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	res, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.True(t, res.Done)
	for _, n := range []string{"n1", "n2", "n3"} {
		assert.NotContains(t, nodeLabels(t, h, n), nicOwner.DevicePluginTargetLabel(), n)
		assert.NotContains(t, nodeLabels(t, h, n), nicOwner.DevicePluginReadyLabel(), n)
	}
}
