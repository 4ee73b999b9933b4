package kmm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

// ConditionDevicePluginReady: the device plugin of spec.devicePlugin runs,
// Ready, on every node it should run on: the schedulable nodes the
// selector matches (with a moduleLoader, once the module is loaded there
// and, with a version, once the ordered upgrade lets that version run).
// It is absent when the spec has no devicePlugin. False with
// reason.DevicePluginNotReady names each node and why, with
// reason.NoTargetedNodes when no node is targeted; Unknown with
// reason.DevicePluginFailed when the API server refused a read or write.
const ConditionDevicePluginReady = "DevicePluginReady"

// What KMM puts into a device plugin DaemonSet.
const (
	devicePluginContainer      = "device-plugin"
	devicePluginInitContainer  = "device-plugin-init"
	kubeletDevicePluginsVolume = "kubelet-device-plugins"
	kubeletDevicePluginsPath   = "/var/lib/kubelet/device-plugins"
	systemNodeCritical         = "system-node-critical"
)

// devicePlugin is what a device plugin pass found and decided.
type devicePlugin struct {
	// status is status.devicePlugin; nil without spec.devicePlugin.
	status *v1beta1.DaemonSetStatus
	// cond is the DevicePluginReady condition; nil removes it.
	cond *metav1.Condition
	// podsOn holds the nodes where a device plugin Pod of the owner
	// exists, in any phase, terminating too; nil when they could not be
	// listed.
	podsOn map[string]bool
}

// syncDevicePlugin makes one pass over obj's device plugin, as KMM's
// DevicePluginReconciler and PodNodeLabelReconciler do together:
//
//   - the DaemonSet of the current version (KMM's fields, one per
//     version, generateName <name>-device-plugin-) is created, or patched
//     when what kmmkit asks for differs from what it holds; with a
//     moduleLoader, a DaemonSet of another version is deleted once it
//     schedules no Pod (status.desiredNumberScheduled == 0);
//   - the device-plugin-target node label is set on the nodes the
//     selector matches that are schedulable for spec.tolerations (with
//     the internal pressure tolerations, as for loading; a cordoned node
//     loses it, so that a drain evicts the device plugin and the unload is
//     not blocked) and are not in stop, and removed from every other node;
//   - the device-plugin-ready node label is set on the nodes where a Pod
//     of these DaemonSets is Ready and not being deleted, and removed
//     elsewhere; the Pods are listed once per pass, never per node.
//
// stop is the hook for day-2 policies: the names of nodes where the
// device plugin must not run now, although the spec targets them. Their
// target label is removed, so the DaemonSet's Pod leaves the node; a
// rolling-upgrade policy fills it to stop the device plugin on a node
// before its module is unloaded there, and empties it again when the node
// may run it. nil stops nothing.
//
// Without spec.devicePlugin, or when obj is being deleted, every device
// plugin DaemonSet of obj is deleted and the target labels go (KMM's
// #590: a running device plugin would keep the module in use); the ready
// labels follow the Pods as they go.
//
// The ready label changes when a Pod's readiness does, which only a
// watch on those Pods tells: the caller's controller must watch them (and
// the DaemonSets, whose status gives the counts and the garbage
// collection): controllerruntime/watch.PodHandler maps both to their
// owner.
func (r *Reconciler) syncDevicePlugin(ctx context.Context, obj Object, nodes []*corev1.Node, stop map[string]bool) (devicePlugin, error) {
	o := r.identity.Owner(obj.Namespace, obj.Name)
	ns := obj.podNamespace()
	want := obj.Spec.DevicePlugin != nil && !obj.Deleting
	var out devicePlugin
	if !want && !obj.Deleting && obj.Status.DevicePlugin == nil &&
		meta.FindStatusCondition(obj.Status.Conditions, ConditionDevicePluginReady) == nil &&
		!anyNodeLabel(nodes, o.DevicePluginTargetLabel(), o.DevicePluginReadyLabel()) {
		// No device plugin, and none left from an earlier spec (whose
		// status and node labels would say so): nothing to list or write.
		// (DaemonSets made by a pass whose status was never written go
		// with the owner, at the latest: a deleting pass always looks.)
		return out, nil
	}
	dss, err := r.devicePluginDaemonSets(ctx, o, ns)
	if err != nil {
		return r.devicePluginFailed(obj, want, err)
	}
	var errs []error
	version := ""
	if obj.Spec.ModuleLoader != nil {
		version = obj.Spec.ModuleLoader.Container.Version
	}
	var kept []appsv1.DaemonSet
	if !want {
		for i := range dss {
			if err := r.deleteDaemonSet(ctx, &dss[i]); err != nil {
				errs = append(errs, err)
				kept = append(kept, dss[i])
			}
		}
	} else {
		cur, err := r.applyDevicePlugin(ctx, obj, o, ns, version, dss)
		if err != nil {
			errs = append(errs, err)
		}
		for i := range dss {
			ds := &dss[i]
			if cur != nil && ds.UID == cur.UID {
				continue
			}
			if obj.Spec.ModuleLoader != nil && ds.Labels[o.VersionSchedulePodLabel()] != version && ds.Status.DesiredNumberScheduled == 0 {
				if err := r.deleteDaemonSet(ctx, ds); err != nil {
					errs = append(errs, err)
				} else {
					continue
				}
			}
			kept = append(kept, *ds)
		}
		if cur != nil {
			kept = append(kept, *cur)
		}
	}

	// One list of the owner's device plugin Pods per pass.
	var readyOn map[string]bool
	notReady := map[string]string{}
	pods, err := r.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{
		o.NameLabel(): identity.LabelValue(obj.Name), o.RoleLabel(): identity.RoleDevicePlugin}.String()})
	if err != nil {
		errs = append(errs, fmt.Errorf("listing the device plugin Pods of %s in namespace %s: %w", o, ns, err))
	} else {
		readyOn, out.podsOn = map[string]bool{}, map[string]bool{}
		for i := range pods.Items {
			p := &pods.Items[i]
			if !ownedByDaemonSet(p) || p.Spec.NodeName == "" {
				continue
			}
			out.podsOn[p.Spec.NodeName] = true
			if podReady(p) && p.DeletionTimestamp == nil {
				readyOn[p.Spec.NodeName] = true
			} else if _, ok := notReady[p.Spec.NodeName]; !ok {
				notReady[p.Spec.NodeName] = p.Name
			}
		}
	}

	// Node labels: one merge patch per node, only when they change.
	sel := labels.SelectorFromSet(obj.Spec.Selector)
	targetKey, readyKey := o.DevicePluginTargetLabel(), o.DevicePluginReadyLabel()
	var targeted []*corev1.Node
	for _, n := range nodes {
		change := map[string]*string{}
		// Schedulable as for loading: spec.tolerations and the internal
		// pressure tolerations (KMM's device plugin controller uses
		// spec.tolerations alone, so memory pressure evicted the device
		// plugin; a watcher's kmm.Untolerated sees the same taints).
		target := want && sel.Matches(labels.Set(n.Labels)) && len(Untolerated(&obj.Spec, n)) == 0
		if target {
			targeted = append(targeted, n)
		}
		if target && !stop[n.Name] {
			change[targetKey] = ptr.To("")
		} else {
			change[targetKey] = nil
		}
		if readyOn != nil {
			if readyOn[n.Name] {
				change[readyKey] = ptr.To("")
			} else {
				change[readyKey] = nil
			}
		}
		if err := r.patchNodeLabels(ctx, n, change); err != nil {
			errs = append(errs, err)
		}
	}
	err = errors.Join(errs...)
	if !want {
		return out, err
	}

	// Status, as KMM counts it.
	var available int32
	for i := range kept {
		available += kept[i].Status.NumberAvailable
	}
	out.status = &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: int32(len(targeted)), DesiredNumber: int32(len(targeted)),
		AvailableNumber: available}
	if err != nil {
		f, _ := r.devicePluginFailed(obj, want, err)
		out.cond = f.cond
		return out, err
	}
	out.cond = devicePluginCondition(obj, o, version, targeted, stop, readyOn, notReady)
	return out, nil
}

// devicePluginCondition says on which targeted nodes the device plugin is
// not Ready, and why.
func devicePluginCondition(obj Object, o identity.Owner, version string, targeted []*corev1.Node, stop, readyOn map[string]bool,
	notReady map[string]string) *metav1.Condition {
	c := &metav1.Condition{Type: ConditionDevicePluginReady, Status: metav1.ConditionTrue, Reason: string(reason.DevicePluginReady),
		ObservedGeneration: obj.Generation}
	if len(targeted) == 0 {
		c.Status, c.Reason = metav1.ConditionFalse, string(reason.NoTargetedNodes)
		c.Message = "no node the selector matches is schedulable for the tolerations, so the device plugin runs nowhere"
		return c
	}
	var why []string
	for _, n := range targeted {
		_, loaded := n.Labels[o.ReadyLabel()]
		switch {
		case readyOn[n.Name]:
			continue
		case stop[n.Name]:
			why = append(why, n.Name+" (stopped for an upgrade)")
		case obj.Spec.ModuleLoader != nil && !loaded:
			why = append(why, n.Name+" (the module is not loaded there yet)")
		case version != "" && n.Labels[o.VersionSchedulePodLabel()] != version:
			why = append(why, fmt.Sprintf("%s (version %s is not scheduled there yet)", n.Name, version))
		case notReady[n.Name] != "":
			why = append(why, fmt.Sprintf("%s (Pod %s is not Ready)", n.Name, notReady[n.Name]))
		default:
			why = append(why, n.Name+" (no Pod)")
		}
	}
	if len(why) == 0 {
		c.Message = fmt.Sprintf("the device plugin is Ready on all %d targeted node(s)", len(targeted))
		return c
	}
	sort.Strings(why)
	c.Status, c.Reason = metav1.ConditionFalse, string(reason.DevicePluginNotReady)
	c.Message = capMessage(fmt.Sprintf("the device plugin is Ready on %d of %d targeted node(s); not on %d: %s",
		len(targeted)-len(why), len(targeted), len(why), names(why, maxProblems)))
	return c
}

// devicePluginFailed is the outcome of a pass the API server failed.
func (r *Reconciler) devicePluginFailed(obj Object, want bool, err error) (devicePlugin, error) {
	if !want {
		return devicePlugin{}, err
	}
	return devicePlugin{status: obj.Status.DevicePlugin.DeepCopy(), cond: &metav1.Condition{Type: ConditionDevicePluginReady,
		Status: metav1.ConditionUnknown, Reason: string(reason.DevicePluginFailed), ObservedGeneration: obj.Generation,
		Message: capMessage(err.Error())}}, err
}

// applyDevicePlugin creates the DaemonSet of version, or brings the one
// there is in line; it returns it as the API server holds it.
func (r *Reconciler) applyDevicePlugin(ctx context.Context, obj Object, o identity.Owner, ns, version string,
	dss []appsv1.DaemonSet) (*appsv1.DaemonSet, error) {
	desired := devicePluginDaemonSet(obj, o, ns, version)
	var cur *appsv1.DaemonSet
	for i := range dss {
		if dss[i].Labels[o.VersionSchedulePodLabel()] == version {
			cur = &dss[i]
			break
		}
	}
	api := r.client.AppsV1().DaemonSets(ns)
	if cur == nil {
		made, err := api.Create(ctx, desired, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("creating the device plugin DaemonSet of %s in namespace %s: %w", o, ns, err)
		}
		r.logger(ctx).V(1).Info("created the device plugin DaemonSet", "daemonSet", made.Name, "version", version)
		return made, nil
	}
	if !daemonSetDiffers(desired, cur, o) {
		return cur, nil
	}
	upd := cur.DeepCopy()
	upd.Labels = mergeMaps(upd.Labels, desired.Labels)
	upd.Annotations = mergeMaps(upd.Annotations, desired.Annotations)
	upd.OwnerReferences = withController(upd.OwnerReferences, desired.OwnerReferences)
	if upd.Spec.Selector == nil {
		upd.Spec.Selector = desired.Spec.Selector
	}
	// A DaemonSet's selector is immutable: one from an older KMM (without
	// the role label, say) is kept; the template's labels still match it.
	upd.Spec.Template = desired.Spec.Template
	made, err := api.Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return cur, fmt.Errorf("updating the device plugin DaemonSet %s/%s of %s: %w", ns, cur.Name, o, err)
	}
	r.logger(ctx).V(1).Info("updated the device plugin DaemonSet", "daemonSet", made.Name, "version", version)
	return made, nil
}

// devicePluginDaemonSet is the DaemonSet KMM makes for a Module's device
// plugin, for version ("" without one).
func devicePluginDaemonSet(obj Object, o identity.Owner, ns, version string) *appsv1.DaemonSet {
	dp := obj.Spec.DevicePlugin
	lbl := map[string]string{o.NameLabel(): identity.LabelValue(obj.Name), o.RoleLabel(): identity.RoleDevicePlugin}
	var nodeSelector map[string]string
	if obj.Spec.ModuleLoader != nil {
		nodeSelector = map[string]string{o.ReadyLabel(): "", o.DevicePluginTargetLabel(): ""}
		if version != "" {
			lbl[o.VersionSchedulePodLabel()] = version
			nodeSelector[o.VersionSchedulePodLabel()] = version
		}
	} else {
		nodeSelector = maps.Clone(obj.Spec.Selector)
	}
	var pullSecrets []corev1.LocalObjectReference
	if s := obj.Spec.ImageRepoSecret; s != nil {
		pullSecrets = []corev1.LocalObjectReference{*s}
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: obj.Name + "-device-plugin-", Labels: lbl},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: maps.Clone(lbl)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: maps.Clone(lbl)},
				Spec: corev1.PodSpec{
					InitContainers: pluginContainer(dp.InitContainer, devicePluginInitContainer, nil),
					Containers: pluginContainer(&dp.Container, devicePluginContainer,
						[]corev1.VolumeMount{{Name: kubeletDevicePluginsVolume, MountPath: kubeletDevicePluginsPath}}),
					PriorityClassName:  systemNodeCritical,
					ImagePullSecrets:   pullSecrets,
					NodeSelector:       nodeSelector,
					ServiceAccountName: dp.ServiceAccountName,
					Volumes: append([]corev1.Volume{{Name: kubeletDevicePluginsVolume, VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: kubeletDevicePluginsPath, Type: ptr.To(corev1.HostPathDirectory)}}}},
						dp.Volumes...),
					Tolerations:                  obj.Spec.Tolerations,
					AutomountServiceAccountToken: dp.AutomountServiceAccountToken,
				},
			},
		},
	}
	if obj.Owner != nil {
		ref := *obj.Owner
		ref.Controller, ref.BlockOwnerDeletion = ptr.To(true), ptr.To(true)
		ds.OwnerReferences = []metav1.OwnerReference{ref}
	}
	ds.Annotations = map[string]string{o.SpecHashAnnotation(): specHash(ds)}
	return ds
}

// pluginContainer is a device plugin (or init) container from the spec:
// privileged, with preset mounts first. nil gives none.
func pluginContainer(c *v1beta1.CommonContainerSpec, name string, mounts []corev1.VolumeMount) []corev1.Container {
	if c == nil {
		return nil
	}
	return []corev1.Container{{
		Name: name, Image: c.Image, ImagePullPolicy: c.ImagePullPolicy, Args: c.Args, Command: c.Command, Env: c.Env,
		Resources: c.Resources, SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
		VolumeMounts: append(mounts, c.VolumeMounts...),
	}}
}

// specHash hashes what kmmkit asks of a DaemonSet.
func specHash(ds *appsv1.DaemonSet) string {
	b, _ := json.Marshal([]any{ds.Labels, ds.OwnerReferences, ds.Spec})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// daemonSetDiffers reports whether cur lacks something of desired: the
// spec changed since cur was written (its hash), or someone changed what
// kmmkit set. What the API server adds (defaults) does not count.
func daemonSetDiffers(desired, cur *appsv1.DaemonSet, o identity.Owner) bool {
	if cur.Annotations[o.SpecHashAnnotation()] != desired.Annotations[o.SpecHashAnnotation()] {
		return true
	}
	for k, v := range desired.Labels {
		if w, ok := cur.Labels[k]; !ok || w != v {
			return true
		}
	}
	if len(desired.OwnerReferences) > 0 && !slicesContainsRef(cur.OwnerReferences, desired.OwnerReferences[0]) {
		return true
	}
	if cur.Spec.Selector == nil {
		return true
	}
	return !jsonSubset(desired.Spec.Template, cur.Spec.Template)
}

func slicesContainsRef(refs []metav1.OwnerReference, want metav1.OwnerReference) bool {
	for _, r := range refs {
		if r.UID == want.UID && ptr.Deref(r.Controller, false) {
			return true
		}
	}
	return false
}

// withController returns refs with want as the controller reference.
func withController(refs, want []metav1.OwnerReference) []metav1.OwnerReference {
	if len(want) == 0 {
		return refs
	}
	out := []metav1.OwnerReference{want[0]}
	for _, r := range refs {
		if r.UID != want[0].UID && !ptr.Deref(r.Controller, false) {
			out = append(out, r)
		}
	}
	return out
}

// jsonSubset reports whether every field a sets holds the same value in
// b, comparing their JSON forms: maps may have more keys in b, lists must
// be as long.
func jsonSubset(a, b any) bool {
	var x, y any
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil || json.Unmarshal(ja, &x) != nil || json.Unmarshal(jb, &y) != nil {
		return false
	}
	return subset(x, y)
}

func subset(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok {
			return len(a) == 0 && b == nil
		}
		for k, v := range a {
			if !subset(v, bm[k]) {
				return false
			}
		}
		return true
	case []any:
		bl, ok := b.([]any)
		if !ok {
			return len(a) == 0 && b == nil
		}
		if len(a) != len(bl) {
			return false
		}
		for i := range a {
			if !subset(a[i], bl[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

func mergeMaps(base, over map[string]string) map[string]string {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, over)
	return out
}

// devicePluginDaemonSets lists o's device plugin DaemonSets in ns as KMM
// finds them: those with o's name label, minus the module-loader and DRA
// roles (a DaemonSet without a role, from an older KMM, counts).
func (r *Reconciler) devicePluginDaemonSets(ctx context.Context, o identity.Owner, ns string) ([]appsv1.DaemonSet, error) {
	l, err := r.client.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{o.NameLabel(): identity.LabelValue(o.Name)}.String()})
	if err != nil {
		return nil, fmt.Errorf("listing the device plugin DaemonSets of %s in namespace %s: %w", o, ns, err)
	}
	out := make([]appsv1.DaemonSet, 0, len(l.Items))
	for _, ds := range l.Items {
		if role := ds.Labels[o.RoleLabel()]; role != identity.RoleModuleLoader && role != identity.RoleDRA {
			out = append(out, ds)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// deleteDaemonSet deletes ds (that very object: its UID); one already
// gone is fine. Its Pods go with it (background propagation).
func (r *Reconciler) deleteDaemonSet(ctx context.Context, ds *appsv1.DaemonSet) error {
	err := r.client.AppsV1().DaemonSets(ds.Namespace).Delete(ctx, ds.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: ptr.To(ds.UID)}, PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the device plugin DaemonSet %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	r.logger(ctx).V(1).Info("deleted the device plugin DaemonSet", "daemonSet", ds.Name)
	return nil
}

// patchNodeLabels applies change (nil deletes) to n's labels with one JSON
// merge patch, and writes nothing when n has them already.
func (r *Reconciler) patchNodeLabels(ctx context.Context, n *corev1.Node, change map[string]*string) error {
	diff := map[string]any{}
	for k, v := range change {
		cur, ok := n.Labels[k]
		switch {
		case v == nil && ok:
			diff[k] = nil
		case v != nil && (!ok || cur != *v):
			diff[k] = *v
		}
	}
	if len(diff) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": diff}})
	if err != nil {
		return fmt.Errorf("patching node %s: %w", n.Name, err)
	}
	if _, err := r.client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patching the device plugin labels of node %s: %w", n.Name, err)
	}
	return nil
}

// ownedByDaemonSet reports whether p is a DaemonSet's Pod.
func ownedByDaemonSet(p *corev1.Pod) bool {
	for _, ref := range p.OwnerReferences {
		if ref.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

// podReady reports whether p's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// setDevicePlugin writes what a device plugin pass found into st.
func (r *Reconciler) setDevicePlugin(st *v1beta1.ModuleStatus, dp devicePlugin) {
	st.DevicePlugin = dp.status
	if dp.cond == nil {
		meta.RemoveStatusCondition(&st.Conditions, ConditionDevicePluginReady)
		return
	}
	setCondition(&st.Conditions, *dp.cond, r.now())
}

// anyNodeLabel reports whether a node has one of keys.
func anyNodeLabel(nodes []*corev1.Node, keys ...string) bool {
	for _, n := range nodes {
		for _, k := range keys {
			if _, ok := n.Labels[k]; ok {
				return true
			}
		}
	}
	return false
}
