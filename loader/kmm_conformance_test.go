package loader_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/internal/kmmconformance"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
)

// The KMM files whose cases follow (kubernetes-sigs/kernel-module-management);
// the worker's are in loader/node/kmm_conformance_test.go.
const (
	kmmWorkerPod = "internal/pod/workerpodmanager_test.go: "
	kmmNMC       = "internal/controllers/nmc_reconciler_test.go: "
)

// kver is the kernel of the nodes.
const kver = "6.1.0-56-amd64"

// --- the worker Pod ---

// kmmPodRequest is KMM's moduleConfig and ModuleItem of its worker Pod
// tests.
func kmmPodRequest(action loader.Action, firmware bool) loader.PodRequest {
	cfg := v1beta1.ModuleConfig{
		KernelVersion: "kernel-version", ContainerImage: "container-image:v1", ImagePullPolicy: corev1.PullIfNotPresent,
		InsecurePull: true, InTreeModulesToRemove: []string{"intree1", "intree2"},
		Modprobe: v1beta1.ModprobeSpec{ModuleName: "test", Parameters: []string{"a=1", "b=2"}, DirName: "/dir", ModulesLoadingOrder: []string{"test", "b", "c"}},
	}
	if firmware {
		cfg.Modprobe.FirmwarePath = "/firmware-path"
	}
	return loader.PodRequest{
		Node: "nmc", Module: "my-module", Namespace: "namespace", Action: action, Config: cfg,
		ServiceAccountName: "some-sa", ImageRepoSecret: &corev1.LocalObjectReference{Name: "some-secret"},
		Tolerations: []corev1.Toleration{{Key: "test-key", Value: "test-value", Effect: corev1.TaintEffectNoExecute}},
	}
}

// kmmWorkerOpts are the worker settings of KMM's test operator config.
func kmmWorkerOpts(more ...loader.Option) []loader.Option {
	return append([]loader.Option{loader.WithRunAsUser(1234), loader.WithSELinuxType("someType")}, more...)
}

func workerPodOf(t *testing.T, req loader.PodRequest, opts ...loader.Option) *corev1.Pod {
	t.Helper()
	pod, err := loader.WorkerPod(req, "worker-image:v1", opts...)
	require.NoError(t, err)
	return pod
}

// assertKMMWorkerPod checks the parts of KMM's worker Pod that kmmkit's
// has too.
func assertKMMWorkerPod(t *testing.T, pod *corev1.Pod, req loader.PodRequest) {
	t.Helper()
	assert.Equal(t, "kmm-worker-nmc-my-module", pod.Name)
	assert.Equal(t, "namespace", pod.Namespace)
	assert.Equal(t, map[string]string{"app.kubernetes.io/component": "worker", "app.kubernetes.io/name": "kmm", "app.kubernetes.io/part-of": "kmm",
		"kmm.node.kubernetes.io/worker-action": string(req.Action), "kmm.node.kubernetes.io/module.name": "my-module"}, pod.Labels)
	cfg, err := yaml.Marshal(req.Config)
	require.NoError(t, err)
	assert.Equal(t, string(cfg), pod.Annotations["kmm.node.kubernetes.io/worker-config"])
	assert.Equal(t, "- effect: NoExecute\n  key: test-key\n  value: test-value\n", pod.Annotations["kmm.node.kubernetes.io/worker-tolerations"])
	assert.NotEmpty(t, pod.Annotations["kmm.node.kubernetes.io/worker-hash"])
	assert.Equal(t, "nmc", pod.Spec.NodeName)
	assert.Equal(t, corev1.RestartPolicyOnFailure, pod.Spec.RestartPolicy)
	assert.Equal(t, "some-sa", pod.Spec.ServiceAccountName)
	assert.Equal(t, req.Tolerations, pod.Spec.Tolerations)
	c := pod.Spec.Containers[0]
	assert.Equal(t, "worker", c.Name)
	assert.Equal(t, "worker-image:v1", c.Image)
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "config", MountPath: "/etc/kmm-worker", ReadOnly: true})
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "host-modules", MountPath: "/lib/modules", ReadOnly: true})
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "host-modules", MountPath: "/host/lib/modules", ReadOnly: true})
	assert.Contains(t, pod.Spec.Volumes, corev1.Volume{Name: "host-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules", Type: ptr.To(corev1.HostPathDirectory)}}})
	assert.Contains(t, pod.Spec.Volumes, corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{
		Path: "config.yaml", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['kmm.node.kubernetes.io/worker-config']"}}}}}})
}

func unprivileged(t *testing.T, pod *corev1.Pod, uid int64, seType string) {
	t.Helper()
	assert.Equal(t, &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_MODULE"}},
		RunAsUser: ptr.To(uid), SELinuxOptions: &corev1.SELinuxOptions{Type: seType}}, pod.Spec.Containers[0].SecurityContext)
}

func firmwareVolume(pod *corev1.Pod) (*corev1.Volume, *corev1.VolumeMount) {
	var v *corev1.Volume
	var m *corev1.VolumeMount
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == "firmware" {
			v = &pod.Spec.Volumes[i]
		}
	}
	for i := range pod.Spec.Containers[0].VolumeMounts {
		if pod.Spec.Containers[0].VolumeMounts[i].Name == "firmware" {
			m = &pod.Spec.Containers[0].VolumeMounts[i]
		}
	}
	return v, m
}

// loaderPodCase is an entry of KMM's CreateLoaderPod "should work as
// expected" table.
func loaderPodCase(hostPath string, firmware bool) func(t *testing.T) {
	return func(t *testing.T) {
		req := kmmPodRequest(loader.ActionLoad, firmware)
		pod := workerPodOf(t, req, kmmWorkerOpts(loader.WithFirmwareHostPath(hostPath))...)
		assertKMMWorkerPod(t, pod, req)
		assert.Equal(t, []corev1.LocalObjectReference{{Name: "some-secret"}}, pod.Spec.ImagePullSecrets)
		v, m := firmwareVolume(pod)
		if !firmware {
			unprivileged(t, pod, 1234, "someType")
			assert.Nil(t, v, "no firmware volume without firmware")
			return
		}
		assert.Equal(t, &corev1.SecurityContext{Privileged: ptr.To(true), RunAsUser: ptr.To[int64](1234)}, pod.Spec.Containers[0].SecurityContext,
			"writing the firmware search path in sysfs needs a privileged worker")
		require.NotNil(t, v)
		assert.Equal(t, &corev1.HostPathVolumeSource{Path: hostPath, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}, v.HostPath)
		require.NotNil(t, m)
		assert.Equal(t, hostPath, m.MountPath, "mounted at the same path")
	}
}

func TestKMMConformanceWorkerPod(t *testing.T) {
	kmmconformance.Run(t, []kmmconformance.Case{
		{KMM: kmmWorkerPod + "getBaseWorkerPod (the template every case expects)",
			Differs: "The worker pulls the kmod image itself", Check: func(t *testing.T) {
				req := kmmPodRequest(loader.ActionLoad, false)
				pod := workerPodOf(t, req, kmmWorkerOpts()...)
				assert.Empty(t, pod.Spec.InitContainers, "no image-extractor init container: no shell or cp needed in the image")
				assert.NotContains(t, pod.Annotations, "kmm.node.kubernetes.io/modules-order", "the worker applies modulesLoadingOrder from its config")
				assert.Equal(t, []string{"/kmm"}, pod.Spec.Containers[0].Command)
				assert.Equal(t, "worker", pod.Spec.Containers[0].Args[0])
				assert.Equal(t, "load", pod.Spec.Containers[0].Args[1])
			}},
		{KMM: kmmWorkerPod + "CreateLoaderPod: it should fail if firmwareHostPath was not set but firmware loading was",
			Differs: "Firmware goes to /lib/firmware unless told otherwise", Check: func(t *testing.T) {
				pod := workerPodOf(t, kmmPodRequest(loader.ActionLoad, true), kmmWorkerOpts()...)
				v, m := firmwareVolume(pod)
				require.NotNil(t, v)
				assert.Equal(t, "/lib/firmware", v.HostPath.Path)
				assert.Equal(t, "/lib/firmware", m.MountPath)
			}},
		{KMM: kmmWorkerPod + "CreateLoaderPod: imagePullSecret should not be defined, if missing from ModuleItem", Check: func(t *testing.T) {
			req := kmmPodRequest(loader.ActionLoad, false)
			req.ImageRepoSecret = nil
			pod := workerPodOf(t, req, kmmWorkerOpts()...)
			assertKMMWorkerPod(t, pod, req)
			assert.Empty(t, pod.Spec.ImagePullSecrets)
			unprivileged(t, pod, 1234, "someType")
		}},
		{KMM: kmmWorkerPod + "CreateLoaderPod: should work as expected: firmwareHostPath not set, firmware loading not requested", Check: loaderPodCase("", false)},
		{KMM: kmmWorkerPod + "CreateLoaderPod: should work as expected: firmwareHostPath set to empty string, firmware loading not requested", Check: func(t *testing.T) {
			loaderPodCase("", false)(t)
			// and KMM's operator defaults: root, spc_t.
			pod := workerPodOf(t, kmmPodRequest(loader.ActionLoad, false))
			unprivileged(t, pod, 0, loader.DefaultSELinuxType)
		}},
		{KMM: kmmWorkerPod + "CreateLoaderPod: should work as expected: firmwareHostPath set, firmware loading not requested", Check: loaderPodCase("some-path", false)},
		{KMM: kmmWorkerPod + "CreateLoaderPod: should work as expected: firmwareHostPath set , firmware loading requested", Check: loaderPodCase("/some-path", true)},
		{KMM: kmmWorkerPod + "CreateUnloaderPod: it should fail if firmwareClassPath was not set but firmware loading was",
			Differs: "Firmware goes to /lib/firmware unless told otherwise", Check: func(t *testing.T) {
				pod := workerPodOf(t, kmmPodRequest(loader.ActionUnload, true), kmmWorkerOpts()...)
				v, _ := firmwareVolume(pod)
				require.NotNil(t, v)
				assert.Equal(t, "/lib/firmware", v.HostPath.Path)
			}},
		{KMM: kmmWorkerPod + "CreateUnloaderPod: should work as expected", Check: func(t *testing.T) {
			req := kmmPodRequest(loader.ActionUnload, true)
			pod := workerPodOf(t, req, kmmWorkerOpts(loader.WithFirmwareHostPath("/lib/firmware"))...)
			assertKMMWorkerPod(t, pod, req)
			unprivileged(t, pod, 1234, "someType")
			v, m := firmwareVolume(pod)
			require.NotNil(t, v)
			assert.Equal(t, &corev1.HostPathVolumeSource{Path: "/lib/firmware", Type: ptr.To(corev1.HostPathDirectoryOrCreate)}, v.HostPath)
			assert.Equal(t, "/lib/firmware", m.MountPath)
		}},
		{KMM: kmmWorkerPod + "DeletePod: should work as expected: deletionTimestamp not set",
			Differs: "Worker Pods carry no finalizer", Check: func(t *testing.T) {
				e := newNMCEnv(t)
				e.addNode(t, "n1", "boot-1")
				e.sync(t, "nic", map[string]*loader.PodRequest{"n1": desiredConfig(kver, "registry.example.com/nic:v1")})
				pods := e.pods(t)
				require.Len(t, pods, 1)
				assert.Empty(t, pods[0].Finalizers)
				e.setStatus(t, pods[0].Name, succeeded)
				e.sync(t, "nic", map[string]*loader.PodRequest{"n1": desiredConfig(kver, "registry.example.com/nic:v1")})
				assert.Empty(t, e.pods(t), "a harvested worker is deleted")
			}},
		{KMM: kmmWorkerPod + "DeletePod: should work as expected: deletionTimestamp set",
			Differs: "Worker Pods carry no finalizer", Check: func(t *testing.T) {
				e := newNMCEnv(t)
				e.addNode(t, "n1", "boot-1")
				want := desiredConfig(kver, "registry.example.com/nic:v1")
				p := e.workerPod(t, "n1", "nic", loader.ActionLoad, want)
				p.DeletionTimestamp = ptr.To(metav1.Now())
				_, err := e.cs.CoreV1().Pods("drivers").Update(context.Background(), p, metav1.UpdateOptions{})
				require.NoError(t, err)
				e.cs.ClearActions()
				st := stateOf(t, e.sync(t, "nic", map[string]*loader.PodRequest{"n1": want}), "n1")
				assert.Equal(t, loader.PhaseLoading, st.Phase, "a Pod being deleted is waited for")
				for _, a := range e.cs.Actions() {
					assert.NotEqual(t, "delete", a.GetVerb(), "nothing to remove from it, and no second delete")
				}
			}},
		{KMM: kmmWorkerPod + "ListWorkerPodsOnNode: should return an error if the kube client encountered one", Check: func(t *testing.T) {
			e := newNMCEnv(t, loader.WithPodLister(func(context.Context, string, labels.Selector) ([]*corev1.Pod, error) {
				return nil, errors.New("random error")
			}))
			e.addNode(t, "n1", "boot-1")
			_, err := e.trySync(t, "nic", map[string]*loader.PodRequest{"n1": desiredConfig(kver, "registry.example.com/nic:v1")})
			assert.ErrorContains(t, err, "listing worker pods of Module drivers/nic in namespace drivers: random error")
			assert.Empty(t, e.pods(t), "nothing is done on a failed list")
		}},
		{KMM: kmmWorkerPod + "ListWorkerPodsOnNode: should the list of pods", Check: func(t *testing.T) {
			var selectors []string
			e := newNMCEnv(t)
			e.l = e.loader(t, loader.WithPodLister(func(ctx context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error) {
				selectors = append(selectors, sel.String())
				l, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
				if err != nil {
					return nil, err
				}
				out := make([]*corev1.Pod, len(l.Items))
				for i := range l.Items {
					out[i] = &l.Items[i]
				}
				return out, nil
			}))
			e.addNode(t, "n1", "boot-1")
			want := desiredConfig(kver, "registry.example.com/nic:v1")
			p := e.workerPod(t, "n1", "nic", loader.ActionLoad, want)
			e.setStatus(t, p.Name, succeeded)
			st := stateOf(t, e.sync(t, "nic", map[string]*loader.PodRequest{"n1": want}), "n1")
			assert.Equal(t, []string{"kmm.node.kubernetes.io/module.name=nic,kmm.node.kubernetes.io/worker-action"}, selectors)
			assert.Equal(t, loader.PhaseLoaded, st.Phase, "the listed worker was harvested")
		}},
	})
}

// --- the NodeModulesConfig reconciler: PodLoader ---

// nmcEnv is a PodLoader on client-go's fake clientset, in namespace
// drivers; KMM's NodeModulesConfig of a node is the node's annotations
// and labels there.
type nmcEnv struct {
	cs    *k8sfake.Clientset
	rec   *record.FakeRecorder
	l     *loader.PodLoader
	clock *clocktesting.FakePassiveClock
}

func newNMCEnv(t *testing.T, opts ...loader.Option) *nmcEnv {
	e := &nmcEnv{cs: k8sfake.NewClientset(), rec: record.NewFakeRecorder(100), clock: clocktesting.NewFakePassiveClock(time.Now())}
	e.l = e.loader(t, opts...)
	return e
}

func (e *nmcEnv) loader(t *testing.T, opts ...loader.Option) *loader.PodLoader {
	t.Helper()
	l, err := loader.NewPodLoader(e.cs, "quay.io/kmmkit/kmm:v0.1",
		append([]loader.Option{loader.WithEventRecorder(e.rec), loader.WithClock(e.clock)}, opts...)...)
	require.NoError(t, err)
	return l
}

func (e *nmcEnv) addNode(t *testing.T, name, bootID string, mutate ...func(*corev1.Node)) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}, Annotations: map[string]string{}},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{BootID: bootID, KernelVersion: kver}}}
	for _, m := range mutate {
		m(n)
	}
	n, err := e.cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{})
	require.NoError(t, err)
	return n
}

func (e *nmcEnv) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := e.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return n
}

// trySync makes one pass for Module drivers/<module>.
func (e *nmcEnv) trySync(t *testing.T, module string, desired map[string]*loader.PodRequest) ([]loader.NodeState, error) {
	t.Helper()
	l, err := e.cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	nodes := make([]*corev1.Node, len(l.Items))
	for i := range l.Items {
		nodes[i] = &l.Items[i]
	}
	return e.l.Sync(context.Background(), loader.SyncRequest{Namespace: "drivers", Module: module, Nodes: nodes, Desired: desired})
}

func (e *nmcEnv) sync(t *testing.T, module string, desired map[string]*loader.PodRequest) []loader.NodeState {
	t.Helper()
	st, err := e.trySync(t, module, desired)
	require.NoError(t, err)
	return st
}

func (e *nmcEnv) pods(t *testing.T) []corev1.Pod {
	t.Helper()
	l, err := e.cs.CoreV1().Pods("drivers").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return l.Items
}

func (e *nmcEnv) pod(t *testing.T, node, module string) *corev1.Pod {
	t.Helper()
	p, err := e.cs.CoreV1().Pods("drivers").Get(context.Background(), loader.WorkerPodName(node, module), metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return p
}

// workerPod creates the worker Pod the loader would create.
func (e *nmcEnv) workerPod(t *testing.T, node, module string, action loader.Action, r *loader.PodRequest) *corev1.Pod {
	t.Helper()
	req := *r
	req.Node, req.Module, req.Namespace, req.Action = node, module, "drivers", action
	pod, err := loader.WorkerPod(req, "quay.io/kmmkit/kmm:v0.1")
	require.NoError(t, err)
	pod.CreationTimestamp = metav1.NewTime(e.clock.Now())
	pod, err = e.cs.CoreV1().Pods("drivers").Create(context.Background(), pod, metav1.CreateOptions{})
	require.NoError(t, err)
	return pod
}

func (e *nmcEnv) setStatus(t *testing.T, name string, mutate func(*corev1.PodStatus)) {
	t.Helper()
	p, err := e.cs.CoreV1().Pods("drivers").Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	mutate(&p.Status)
	_, err = e.cs.CoreV1().Pods("drivers").UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// observed records on a node what KMM's NodeModulesConfig status would
// hold: r loaded in boot bootID.
func observed(t *testing.T, module string, r *loader.PodRequest, bootID string) func(*corev1.Node) {
	return func(n *corev1.Node) {
		raw, err := json.Marshal(loader.Observed{Config: r.Config, BootID: bootID, Version: r.ModuleVersion,
			ServiceAccountName: r.ServiceAccountName, Tolerations: r.Tolerations})
		require.NoError(t, err)
		n.Annotations[loader.ObservedAnnotation("drivers", module)] = string(raw)
	}
}

// readyLabels puts the module's .ready (and .version.ready) labels on a
// node.
func readyLabels(module, version string) func(*corev1.Node) {
	return func(n *corev1.Node) {
		n.Labels[loader.ReadyLabel("drivers", module)] = ""
		if version != "" {
			n.Labels[loader.VersionReadyLabel("drivers", module)] = version
		}
	}
}

func (e *nmcEnv) events() []string {
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

func failing(s *corev1.PodStatus) {
	s.Phase = corev1.PodRunning
	s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", RestartCount: 1,
		State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "load failed"}}}}
}

// failOn is a reactor that fails the actions match selects (all when nil).
func failOn(match func(k8stesting.Action) bool) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		if match == nil || match(a) {
			return true, nil, errors.New("some error")
		}
		return false, nil, nil
	}
}

// outdatedWorker is KMM's "should delete the existing pod if its hash
// annotation is outdated" for a loader (or an unloader): a worker of an
// older template whose container restarted is replaced.
func outdatedWorker(action loader.Action) func(t *testing.T) {
	return func(t *testing.T) {
		e := newNMCEnv(t)
		want := desiredConfig(kver, "registry.example.com/nic:v2")
		old := desiredConfig(kver, "registry.example.com/nic:v1")
		desired := map[string]*loader.PodRequest{"n1": want}
		if action == loader.ActionUnload {
			// The unloader of a module no longer wanted, whose template
			// is outdated: made with another loader's options.
			e.addNode(t, "n1", "boot-1", observed(t, "nic", old, "boot-1"))
			desired = nil
			req := *old
			req.Node, req.Module, req.Namespace, req.Action = "n1", "nic", "drivers", loader.ActionUnload
			pod, err := loader.WorkerPod(req, "quay.io/kmmkit/kmm:v0.0")
			require.NoError(t, err)
			_, err = e.cs.CoreV1().Pods("drivers").Create(context.Background(), pod, metav1.CreateOptions{})
			require.NoError(t, err)
		} else {
			e.addNode(t, "n1", "boot-1")
			e.workerPod(t, "n1", "nic", loader.ActionLoad, old)
		}
		e.setStatus(t, loader.WorkerPodName("n1", "nic"), failing)
		e.sync(t, "nic", desired)
		assert.Nil(t, e.pod(t, "n1", "nic"), "the outdated worker is deleted")
		e.sync(t, "nic", desired)
		p := e.pod(t, "n1", "nic")
		require.NotNil(t, p, "and made again from the current template")
		assert.Equal(t, string(action), p.Labels[loader.LabelWorkerAction])
		assert.Equal(t, "quay.io/kmmkit/kmm:v0.1", p.Spec.Containers[0].Image)
	}
}

// untemplatable is KMM's "error making the Pod template": in kmmkit every
// input that cannot make a worker Pod is refused before anything is
// written.
func untemplatable(t *testing.T) {
	_, err := loader.NewPodLoader(k8sfake.NewClientset(), "")
	assert.ErrorContains(t, err, "pod loader: no worker image")
	e := newNMCEnv(t)
	e.addNode(t, "n1", "boot-1")
	_, err = e.l.Sync(context.Background(), loader.SyncRequest{Module: "nic", Desired: map[string]*loader.PodRequest{"n1": desiredConfig(kver, "r/nic:v1")}})
	assert.ErrorContains(t, err, "nic has no namespace")
	assert.Empty(t, e.pods(t))
}

// eventCase is an entry of KMM's "RecordEvents different scenarios"
// table: the module's .ready label before a pass, whether the module is
// desired (spec), recorded as loaded (status, with or without a config,
// equal to the desired one or not); and, after the pass, the label and
// the event.
func eventCase(labelBefore, spec, status, statusConfig, equal, labelAfter bool, event string) func(t *testing.T) {
	return func(t *testing.T) {
		e := newNMCEnv(t)
		want := desiredConfig(kver, "registry.example.com/nic:v1")
		var setup []func(*corev1.Node)
		if labelBefore {
			setup = append(setup, readyLabels("nic", ""))
		}
		if status {
			rec := &loader.PodRequest{}
			if statusConfig {
				rec = desiredConfig(kver, "registry.example.com/nic:v0")
				if equal {
					rec = want
				}
			}
			setup = append(setup, observed(t, "nic", rec, "boot-1"))
		}
		e.addNode(t, "n1", "boot-1", setup...)
		var desired map[string]*loader.PodRequest
		if spec {
			desired = map[string]*loader.PodRequest{"n1": want}
		}
		e.sync(t, "nic", desired)
		_, has := e.node(t, "n1").Labels[loader.ReadyLabel("drivers", "nic")]
		assert.Equal(t, labelAfter, has, ".ready after the pass")
		events := e.events()
		if event == "" {
			assert.Empty(t, events)
			return
		}
		require.Len(t, events, 1)
		// KMM's reason, message and module annotation.
		assert.Equal(t, "Normal "+event+" Module drivers/nic "+map[string]string{"ModuleLoaded": "loaded into", "ModuleUnloaded": "unloaded from"}[event]+
			" the kernel map[module:drivers/nic]", events[0])
	}
}

func TestKMMConformanceNMCReconciler(t *testing.T) {
	v1 := func() *loader.PodRequest { return desiredConfig(kver, "registry.example.com/nic:v1") }
	want := func(node string) map[string]*loader.PodRequest { return map[string]*loader.PodRequest{node: v1()} }
	ready := loader.ReadyLabel("drivers", "nic")
	version := loader.VersionReadyLabel("drivers", "nic")
	ctx := context.Background()

	kmmconformance.Run(t, []kmmconformance.Case{
		// Reconcile
		{KMM: kmmNMC + "NodeModulesConfigReconciler_Reconcile: should clean worker Pod finalizers and return if the NMC does not exist", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.workerPod(t, "gone", "nic", loader.ActionLoad, v1())
			st := e.sync(t, "nic", nil)
			assert.Empty(t, st)
			assert.Empty(t, e.pods(t), "the workers of a node that no longer exists are removed")
		}},
		{KMM: kmmNMC + "NodeModulesConfigReconciler_Reconcile: should fail if we could not synchronize the NMC status", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			p := e.workerPod(t, "n1", "nic", loader.ActionLoad, v1())
			e.setStatus(t, p.Name, succeeded)
			e.cs.PrependReactor("patch", "nodes", failOn(nil))
			_, err := e.trySync(t, "nic", want("n1"))
			assert.ErrorContains(t, err, "node n1: patching node n1: some error")
			assert.NotNil(t, e.pod(t, "n1", "nic"), "the worker stays until its result is recorded")
		}},
		{KMM: kmmNMC + "NodeModulesConfigReconciler_Reconcile: should fail if we could not get the node of the NMC", Check: nodeReadFails},
		{KMM: kmmNMC + "NodeModulesConfigReconciler_Reconcile: should remove kmod labels and not continue if node is not schedulable",
			Differs: "Taints do not remove .ready", Check: func(t *testing.T) {
				for _, taint := range []corev1.Taint{
					{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule},
					{Key: "maintenance", Effect: corev1.TaintEffectNoExecute},
				} {
					e := newNMCEnv(t)
					e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"), readyLabels("nic", "1.0"), func(n *corev1.Node) {
						n.Spec.Taints = []corev1.Taint{taint}
						n.Labels["example.node.kubernetes.io/label-not-to-be-removed"] = ""
					})
					st := stateOf(t, e.sync(t, "nic", want("n1")), "n1")
					labels := e.node(t, "n1").Labels
					assert.Contains(t, labels, ready, "%s: the module is still loaded", taint.Key)
					assert.Equal(t, "1.0", labels[version])
					assert.Contains(t, labels, "example.node.kubernetes.io/label-not-to-be-removed")
					assert.Empty(t, e.pods(t), "and nothing is unloaded")
					if taint.Effect == corev1.TaintEffectNoExecute {
						assert.Equal(t, loader.PhaseBlocked, st.Phase, "a worker could not run there")
					}
				}
			}},
		{KMM: kmmNMC + "NodeModulesConfigReconciler_Reconcile: should fail to remove kmod labels and not continue if node is not schedulable",
			Differs: "Taints do not remove .ready", Check: func(t *testing.T) {
				e := newNMCEnv(t)
				e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"), readyLabels("nic", "1.0"), func(n *corev1.Node) {
					n.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}}
				})
				e.cs.PrependReactor("patch", "nodes", failOn(nil))
				st, err := e.trySync(t, "nic", want("n1"))
				require.NoError(t, err, "no label is removed, so no patch is made that could fail")
				assert.Equal(t, loader.PhaseLoaded, stateOf(t, st, "n1").Phase)
			}},
		{KMM: kmmNMC + "NodeModulesConfigReconciler_Reconcile: should process spec entries and orphan statuses", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "mod0", v1(), "boot-1"), observed(t, "mod2", v1(), "boot-1"))
			assert.Equal(t, loader.PhaseLoaded, stateOf(t, e.sync(t, "mod0", want("n1")), "n1").Phase, "spec and status: loaded")
			assert.Nil(t, e.pod(t, "n1", "mod0"))
			assert.Equal(t, loader.PhaseLoading, stateOf(t, e.sync(t, "mod1", want("n1")), "n1").Phase, "spec only: a loader")
			assert.Equal(t, "Load", e.pod(t, "n1", "mod1").Labels[loader.LabelWorkerAction])
			assert.Equal(t, loader.PhaseUnloading, stateOf(t, e.sync(t, "mod2", nil), "n1").Phase, "status only: an unloader")
			assert.Equal(t, "Unload", e.pod(t, "n1", "mod2").Labels[loader.LabelWorkerAction])
		}},
		{KMM: kmmNMC + "NodeModulesConfigReconciler_Reconcile: should complete all the reconcile functions and return combined error", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			e.addNode(t, "n2", "boot-1")
			e.addNode(t, "n3", "boot-1")
			e.cs.PrependReactor("create", "pods", failOn(func(a k8stesting.Action) bool {
				p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
				return p.Spec.NodeName != "n2"
			}))
			st, err := e.trySync(t, "nic", map[string]*loader.PodRequest{"n1": v1(), "n2": v1(), "n3": v1()})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "node n1: creating worker pod drivers/kmm-worker-n1-nic: some error")
			assert.Contains(t, err.Error(), "node n3: creating worker pod drivers/kmm-worker-n3-nic: some error")
			assert.Equal(t, loader.PhaseFailed, stateOf(t, st, "n1").Phase)
			assert.Equal(t, loader.PhaseLoading, stateOf(t, st, "n2").Phase, "one node's failure does not stop the others")
			assert.NotNil(t, e.pod(t, "n2", "nic"))
		}},

		// GarbageCollectWorkerPods
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_GarbageCollectWorkerPods: should delete orphaned worker pod", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			e.workerPod(t, "n1", "nic", loader.ActionLoad, v1())
			e.sync(t, "nic", nil)
			assert.Nil(t, e.pod(t, "n1", "nic"))
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_GarbageCollectWorkerPods: should do nothing because there are not orphaned worker pods", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			p := e.workerPod(t, "n1", "nic", loader.ActionLoad, v1())
			e.setStatus(t, p.Name, running)
			e.sync(t, "nic", want("n1"))
			assert.NotNil(t, e.pod(t, "n1", "nic"))
		}},

		// GarbageCollectInUseLabels: KMM's in-use label is kmmkit's record
		// on the node, which stays while anything of the module is there.
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_GarbageCollectInUseLabels: should do nothing if no labels should be collected", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			n := e.addNode(t, "n1", "boot-1")
			assert.Empty(t, e.sync(t, "nic", nil))
			assert.Equal(t, n.ResourceVersion, e.node(t, "n1").ResourceVersion, "no write")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_GarbageCollectInUseLabels: should work as expected", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "c", v1(), "boot-1"), observed(t, "d", v1(), "boot-1"))
			e.sync(t, "c", want("n1"))
			e.sync(t, "d", nil)
			annots := e.node(t, "n1").Annotations
			assert.Contains(t, annots, loader.ObservedAnnotation("drivers", "c"), "loaded: kept")
			assert.Contains(t, annots, loader.ObservedAnnotation("drivers", "d"), "being unloaded: kept")
			e.setStatus(t, loader.WorkerPodName("n1", "d"), succeeded)
			e.sync(t, "d", nil)
			assert.NotContains(t, e.node(t, "n1").Annotations, loader.ObservedAnnotation("drivers", "d"), "unloaded: gone")
		}},

		// ProcessModuleSpec
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should create a loader Pod if there is no existing Pod and the status is missing", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			e.sync(t, "nic", want("n1"))
			assert.Equal(t, "Load", e.pod(t, "n1", "nic").Labels[loader.LabelWorkerAction])
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should create an unloader Pod if the spec is different from the status and kernels are equal", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", desiredConfig(kver, "registry.example.com/nic:v0"), "boot-1"))
			e.sync(t, "nic", want("n1"))
			p := e.pod(t, "n1", "nic")
			assert.Equal(t, "Unload", p.Labels[loader.LabelWorkerAction])
			assert.Contains(t, p.Annotations[loader.AnnotationWorkerConfig], "nic:v0", "it unloads what the status holds")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should create an loader Pod if the spec is different from the status and kernels different equal", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", desiredConfig("6.1.0-55-amd64", "registry.example.com/nic:v0"), "boot-1"))
			e.sync(t, "nic", want("n1"))
			p := e.pod(t, "n1", "nic")
			assert.Equal(t, "Load", p.Labels[loader.LabelWorkerAction])
			assert.Contains(t, p.Annotations[loader.AnnotationWorkerConfig], "nic:v1")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should create a loader Pod if status is older than the Ready condition: pod status is newer then node's Ready condition, worker pod should not be created", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"))
			assert.Equal(t, loader.PhaseLoaded, stateOf(t, e.sync(t, "nic", want("n1")), "n1").Phase)
			assert.Empty(t, e.pods(t))
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should create a loader Pod if status is older than the Ready condition: pod status is older then node's Ready condition, worker pod should be created", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-2", observed(t, "nic", v1(), "boot-1"))
			e.sync(t, "nic", want("n1"))
			assert.Equal(t, "Load", e.pod(t, "n1", "nic").Labels[loader.LabelWorkerAction], "rebooted: load again")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should do nothing if the pod is not loading a kmod",
			Differs: "Outdated workers that cannot progress are replaced", Check: func(t *testing.T) {
				// KMM's Pod: a loader of no particular template that never
				// started.
				e := newNMCEnv(t)
				e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"))
				p := e.workerPod(t, "n1", "nic", loader.ActionLoad, v1())
				p.Annotations[loader.AnnotationWorkerHash] = "outdated"
				_, err := e.cs.CoreV1().Pods("drivers").Update(ctx, p, metav1.UpdateOptions{})
				require.NoError(t, err)
				e.sync(t, "nic", want("n1"))
				assert.Nil(t, e.pod(t, "n1", "nic"), "a worker that has not started is replaced by the current template")
			}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should do nothing if the worker container has not restarted", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			e.workerPod(t, "n1", "nic", loader.ActionLoad, desiredConfig(kver, "registry.example.com/nic:v0"))
			e.setStatus(t, loader.WorkerPodName("n1", "nic"), running)
			e.sync(t, "nic", want("n1"))
			p := e.pod(t, "n1", "nic")
			require.NotNil(t, p, "a running worker is not cut short, even when outdated")
			assert.Contains(t, p.Annotations[loader.AnnotationWorkerConfig], "nic:v0")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should return an error if there was an error making the Pod template", Check: untemplatable},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessModuleSpec: should delete the existing pod if its hash annotation is outdated", Check: outdatedWorker(loader.ActionLoad)},

		// ProcessUnconfiguredModuleStatus
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessUnconfiguredModuleStatus: should do nothing , if the node has been rebooted/ready lately", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-2", observed(t, "nic", v1(), "boot-1"))
			e.sync(t, "nic", nil)
			assert.Empty(t, e.pods(t), "nothing to unload after a reboot")
			assert.NotContains(t, e.node(t, "n1").Annotations, loader.ObservedAnnotation("drivers", "nic"), "the status is dropped")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessUnconfiguredModuleStatus: should create an unloader Pod if no worker Pod exists", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"))
			e.sync(t, "nic", nil)
			assert.Equal(t, "Unload", e.pod(t, "n1", "nic").Labels[loader.LabelWorkerAction])
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessUnconfiguredModuleStatus: should delete the current worker if it is loading a module", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"))
			e.workerPod(t, "n1", "nic", loader.ActionLoad, desiredConfig(kver, "registry.example.com/nic:v2"))
			e.sync(t, "nic", nil)
			assert.Nil(t, e.pod(t, "n1", "nic"))
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessUnconfiguredModuleStatus: should do nothing if the pod has not restarted yet",
			Differs: "Outdated workers that cannot progress are replaced", Check: func(t *testing.T) {
				// KMM's Pod: an unloader of no particular template that never
				// started. A running one is left alone.
				e := newNMCEnv(t)
				e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"))
				p := e.workerPod(t, "n1", "nic", loader.ActionUnload, v1())
				p.Annotations[loader.AnnotationWorkerHash] = "outdated"
				_, err := e.cs.CoreV1().Pods("drivers").Update(ctx, p, metav1.UpdateOptions{})
				require.NoError(t, err)
				e.sync(t, "nic", nil)
				assert.Nil(t, e.pod(t, "n1", "nic"), "an unloader that has not started is replaced by the current template")
				e.sync(t, "nic", nil)
				e.setStatus(t, loader.WorkerPodName("n1", "nic"), running)
				e.sync(t, "nic", nil)
				assert.NotNil(t, e.pod(t, "n1", "nic"), "a running unloader is waited for")
			}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessUnconfiguredModuleStatus: should return an error if there was an error while making the unloader Pod", Check: untemplatable},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_ProcessUnconfiguredModuleStatus: should delete the existing pod if its hash annotation is outdated", Check: outdatedWorker(loader.ActionUnload)},

		// SyncStatus
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_SyncStatus: should do nothing if there are no running pods for this NMC", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"), readyLabels("nic", "1.0"))
			rv := e.node(t, "n1").ResourceVersion
			e.sync(t, "nic", want("n1"))
			assert.Equal(t, rv, e.node(t, "n1").ResourceVersion)
			assert.Empty(t, e.pods(t))
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_SyncStatus: failed pods", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "mod1", desiredConfig(kver, "some-image:v0"), "boot-1"))
			for _, m := range []string{"mod1", "mod2"} {
				p := e.workerPod(t, "n1", m, loader.ActionLoad, v1())
				e.setStatus(t, p.Name, func(s *corev1.PodStatus) { s.Phase = corev1.PodFailed; s.Message = "evicted" })
			}
			st1 := stateOf(t, e.sync(t, "mod1", want("n1")), "n1")
			st2 := stateOf(t, e.sync(t, "mod2", want("n1")), "n1")
			assert.Empty(t, e.pods(t), "failed workers are deleted")
			assert.Equal(t, loader.ReasonPodFailed, st1.Condition.Reason)
			assert.Equal(t, loader.ReasonPodFailed, st2.Condition.Reason)
			require.NotNil(t, st1.Observed, "the status is untouched")
			assert.Equal(t, "some-image:v0", st1.Observed.Config.ContainerImage)
			assert.Nil(t, st2.Observed)
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_SyncStatus: should remove the status and label if an unloader pod was successful", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"), readyLabels("nic", "1.0"))
			p := e.workerPod(t, "n1", "nic", loader.ActionUnload, v1())
			e.setStatus(t, p.Name, succeeded)
			e.sync(t, "nic", nil)
			n := e.node(t, "n1")
			assert.NotContains(t, n.Annotations, loader.ObservedAnnotation("drivers", "nic"))
			assert.NotContains(t, n.Labels, ready)
			assert.NotContains(t, n.Labels, version)
			assert.Empty(t, e.pods(t))
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_SyncStatus: should add the status if a loader pod was successful", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-7")
			r := v1()
			r.ImageRepoSecret = &corev1.LocalObjectReference{Name: "some-secret"}
			r.ServiceAccountName = "some-sa"
			r.Tolerations = []corev1.Toleration{{Key: "test-key", Value: "test-value", Effect: corev1.TaintEffectNoExecute}}
			r.ModuleVersion = "some version"
			p := e.workerPod(t, "n1", "nic", loader.ActionLoad, r)
			e.setStatus(t, p.Name, succeeded)
			st := stateOf(t, e.sync(t, "nic", map[string]*loader.PodRequest{"n1": r}), "n1")
			assert.Equal(t, &loader.Observed{Config: r.Config, BootID: "boot-7", Version: "some version", ServiceAccountName: "some-sa",
				ImageRepoSecret: r.ImageRepoSecret, Tolerations: r.Tolerations}, st.Observed)
			obs, ok, err := loader.ObservedOn(e.node(t, "n1"), "drivers", "nic")
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, st.Observed, obs)
			assert.Empty(t, e.pods(t))
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_SyncStatus: pod should not be deleted if NMC patch failed", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"))
			p := e.workerPod(t, "n1", "nic", loader.ActionUnload, v1())
			e.setStatus(t, p.Name, succeeded)
			e.cs.PrependReactor("patch", "nodes", failOn(nil))
			_, err := e.trySync(t, "nic", nil)
			assert.ErrorContains(t, err, "patching node n1: some error")
			assert.NotNil(t, e.pod(t, "n1", "nic"))
		}},

		// RemovePodFinalizers
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RemovePodFinalizers: should do nothing if no pods are present", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			st, err := e.trySync(t, "nic", nil)
			require.NoError(t, err)
			assert.Empty(t, st)
			var verbs []string
			for _, a := range e.cs.Actions() {
				verbs = append(verbs, a.GetVerb()+" "+a.GetResource().Resource)
			}
			assert.Equal(t, []string{"list nodes", "list pods"}, verbs, "the nodes and the worker Pods are listed, and nothing else is done")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RemovePodFinalizers: should patch to remove the finalizer if it is set",
			Differs: "Worker Pods carry no finalizer", Check: func(t *testing.T) {
				e := newNMCEnv(t)
				e.addNode(t, "n1", "boot-1")
				e.sync(t, "nic", want("n1"))
				assert.Empty(t, e.pod(t, "n1", "nic").Finalizers, "nothing to remove")
				require.NoError(t, e.cs.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}))
				e.sync(t, "nic", nil)
				assert.Empty(t, e.pods(t), "the node is gone: its worker is deleted")
			}},

		// UpdateNodeLabels
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_UpdateNodeLabels: failed to get node", Check: nodeReadFails},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_UpdateNodeLabels: Should fail patching node after change in labels", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "nic", v1(), "boot-1"))
			e.cs.PrependReactor("patch", "nodes", failOn(nil))
			_, err := e.trySync(t, "nic", want("n1"))
			assert.ErrorContains(t, err, "patching node n1: some error")
			assert.NotContains(t, e.node(t, "n1").Labels, ready)
			assert.Empty(t, e.events(), "no event for a label that was not set")
		}},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_UpdateNodeLabels: Should work as expected", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			first := v1()
			first.ModuleVersion = "some version"
			e.addNode(t, "n1", "boot-1", observed(t, "first", first, "boot-1"), func(n *corev1.Node) {
				n.Labels[loader.ReadyLabel("drivers", "second")] = ""
				n.Labels[loader.VersionReadyLabel("drivers", "second")] = "2"
			})
			e.sync(t, "first", map[string]*loader.PodRequest{"n1": first})
			e.sync(t, "second", nil)
			l := e.node(t, "n1").Labels
			assert.Equal(t, "", l[loader.ReadyLabel("drivers", "first")])
			assert.Equal(t, "some version", l[loader.VersionReadyLabel("drivers", "first")])
			assert.NotContains(t, l, loader.ReadyLabel("drivers", "second"))
			assert.NotContains(t, l, loader.VersionReadyLabel("drivers", "second"))
		}},

		// RecordEvents: label before, spec, status, status config, equal; label after, event
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label present, spec missing, status missing",
			Check: eventCase(true, false, false, false, false, false, "ModuleUnloaded")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label present, spec present, status missing",
			Differs: "The .ready label says what is loaded now", Check: eventCase(true, true, false, false, false, false, "ModuleUnloaded")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label present, spec present, status present, status config missing",
			Differs: "The .ready label says what is loaded now", Check: eventCase(true, true, true, false, false, false, "ModuleUnloaded")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label present, spec present, status present, status config present, configs not equal",
			Differs: "The .ready label says what is loaded now", Check: eventCase(true, true, true, true, false, false, "ModuleUnloaded")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label present, spec present, status present, status config present, configs equal",
			Check: eventCase(true, true, true, true, true, true, "")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label missing, spec missing, status missing",
			Check: eventCase(false, false, false, false, false, false, "")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label missing, spec present, status missing",
			Check: eventCase(false, true, false, false, false, false, "")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label missing, spec present, status present, status config missing",
			Check: eventCase(false, true, true, false, false, false, "")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label missing, spec present, status present, status config present, configs not equal",
			Check: eventCase(false, true, true, true, false, false, "")},
		{KMM: kmmNMC + "nmcReconcilerHelperImpl_RecordEvents: node label missing, spec present, status present, status config present, configs equal",
			Check: eventCase(false, true, true, true, true, true, "ModuleLoaded")},

		// The label helpers
		{KMM: kmmNMC + "getKernelModuleReadyLabels: Should be empty", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			assert.Empty(t, e.sync(t, "example-name-1", nil), "no label, nothing to do")
		}},
		{KMM: kmmNMC + "getKernelModuleReadyLabels: nodeModuleReadyLabels found (an invalid label)", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", func(n *corev1.Node) { n.Labels["invalid"] = "" })
			e.sync(t, "example-name-1", nil)
			assert.Contains(t, e.node(t, "n1").Labels, "invalid", "not a module's label: left alone")
		}},
		{KMM: kmmNMC + "getKernelModuleReadyLabels: nodeModuleReadyLabels found (a module's label)", Check: func(t *testing.T) {
			assert.Equal(t, "kmm.node.kubernetes.io/example-ns-1.example-name-1.ready", loader.ReadyLabel("example-ns-1", "example-name-1"))
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", readyLabels("example-name-1", ""))
			assert.Len(t, e.sync(t, "example-name-1", nil), 1, "the node with the module's label is visited")
		}},
		{KMM: kmmNMC + "getDeprecatedKernelModuleReadyLabels: Should be empty", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "example-name-1", v1(), "boot-1"), readyLabels("example-name-1", "1.0"))
			rv := e.node(t, "n1").ResourceVersion
			e.sync(t, "example-name-1", want("n1"))
			assert.Equal(t, rv, e.node(t, "n1").ResourceVersion, "nothing to remove: no write")
		}},
		{KMM: kmmNMC + "getDeprecatedKernelModuleReadyLabels: deprecated node module ready labels not found", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", func(n *corev1.Node) { n.Labels["invalid"] = "" })
			e.sync(t, "example-name-1", want("n1"))
			assert.Contains(t, e.node(t, "n1").Labels, "invalid")
		}},
		{KMM: kmmNMC + "getDeprecatedKernelModuleReadyLabels: deprecated node module ready labels found", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", func(n *corev1.Node) {
				n.Labels["kmm.node.kubernetes.io/example-name-1.ready"] = ""
				n.Labels["kmm.node.kubernetes.io/other-module.ready"] = ""
			})
			e.sync(t, "example-name-1", want("n1"))
			l := e.node(t, "n1").Labels
			assert.NotContains(t, l, "kmm.node.kubernetes.io/example-name-1.ready", "KMM 1.x's label of the Module is removed")
			assert.Contains(t, l, "kmm.node.kubernetes.io/other-module.ready", "another Module's is that Module's to remove")
		}},
		{KMM: kmmNMC + "getSpecLabelsAndTheirConfigs: Should not have module not from nmc", Check: onlyOwnKeys},
		{KMM: kmmNMC + "getSpecLabelsAndTheirConfigs: Should have module from nmc", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1")
			e.sync(t, "example-name-1", want("n1"))
			assert.Contains(t, e.pod(t, "n1", "example-name-1").Annotations[loader.AnnotationWorkerConfig], "registry.example.com/nic:v1",
				"the desired config of the module is what its worker loads")
		}},
		{KMM: kmmNMC + "getStatusLabelsAndTheirConfigs: Should not have module not from nmc", Check: func(t *testing.T) {
			e := newNMCEnv(t)
			e.addNode(t, "n1", "boot-1", observed(t, "example-name-1", v1(), "boot-1"))
			st := stateOf(t, e.sync(t, "example-name-1", want("n1")), "n1")
			require.NotNil(t, st.Observed)
			assert.Equal(t, "registry.example.com/nic:v1", st.Observed.Config.ContainerImage)
		}},
		{KMM: kmmNMC + "getStatusLabelsAndTheirConfigs: Should have module from nmc", Check: onlyOwnKeys},

		// removeOrphanedLabels: the ready labels of modules in neither spec
		// nor status go; KMM keeps those of modules in either.
		{KMM: kmmNMC + "removeOrphanedLabels: Empty spec and status labels, should result of empty unloaded variable",
			Check: eventCase(false, false, false, false, false, false, "")},
		{KMM: kmmNMC + "removeOrphanedLabels: ModuleConfig obj exists in specLabels so it should not be in unloaded variable",
			Differs: "The .ready label says what is loaded now", Check: eventCase(true, true, false, false, false, false, "ModuleUnloaded")},
		{KMM: kmmNMC + "removeOrphanedLabels: ModuleConfig obj exists in statusLabels so it should not be in unloaded variable",
			Differs: "The .ready label says what is loaded now", Check: eventCase(true, false, true, true, false, false, "ModuleUnloaded")},
		{KMM: kmmNMC + "removeOrphanedLabels: Both ModuleConfig obj exist in specLabels or statusLabels so they should not be in unloaded variable",
			Differs: "The .ready label says what is loaded now", Check: func(t *testing.T) {
				eventCase(true, true, false, false, false, false, "ModuleUnloaded")(t)
				eventCase(true, false, true, true, false, false, "ModuleUnloaded")(t)
			}},

		// addEqualLabels
		{KMM: kmmNMC + "addEqualLabels: Empty spec and status labels, should result of empty loaded variable",
			Check: eventCase(false, false, false, false, false, false, "")},
		{KMM: kmmNMC + "addEqualLabels: specConfig and statusConfig are equal and nsn is not in nodeModuleReadyLabels, so nsn should be returned",
			Check: eventCase(false, true, true, true, true, true, "ModuleLoaded")},
		{KMM: kmmNMC + "addEqualLabels: specConfig and statusConfig aren't equal so nsn shouldn't not be returned",
			Check: eventCase(false, true, true, true, false, false, "")},
		{KMM: kmmNMC + "addEqualLabels: nsn is in nodeModuleReadyLabels so nsn should not be returned",
			Check: eventCase(true, true, true, true, true, true, "")},
	})
}

// nodeReadFails: when the loader must read a node (to record the boot
// ID of a finished load) and cannot, the pass fails naming the node, and
// the worker stays.
func nodeReadFails(t *testing.T) {
	e := newNMCEnv(t)
	e.addNode(t, "n1", "boot-1")
	r := desiredConfig(kver, "registry.example.com/nic:v1")
	p := e.workerPod(t, "n1", "nic", loader.ActionLoad, r)
	e.setStatus(t, p.Name, succeeded)
	e.cs.PrependReactor("get", "nodes", failOn(nil))
	_, err := e.trySync(t, "nic", map[string]*loader.PodRequest{"n1": r})
	assert.ErrorContains(t, err, "node n1: reading node n1: some error")
	assert.NotNil(t, e.pod(t, "n1", "nic"))
}

// onlyOwnKeys: a pass for one module reads and writes that module's keys
// only, never another's.
func onlyOwnKeys(t *testing.T) {
	e := newNMCEnv(t)
	other := desiredConfig(kver, "registry.example.com/other:v1")
	e.addNode(t, "n1", "boot-1", observed(t, "example-name-2", other, "boot-1"), readyLabels("example-name-2", ""))
	e.sync(t, "example-name-1", nil)
	n := e.node(t, "n1")
	assert.Contains(t, n.Annotations, loader.ObservedAnnotation("drivers", "example-name-2"))
	assert.Contains(t, n.Labels, loader.ReadyLabel("drivers", "example-name-2"))
	assert.Empty(t, e.pods(t), "nothing is unloaded for another module")
}
