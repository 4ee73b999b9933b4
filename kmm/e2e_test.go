package kmm_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// e2e is the whole pipeline on a real kube-apiserver and a real registry.
type e2e struct {
	t       *testing.T
	cs      kubernetes.Interface
	modules kmm.ModuleClient
	r       *kmm.Reconciler
	ns      string
	loads   map[string][]string // node → worker actions, in order
}

// kubelet plays the kubelet for the test's worker Pods: it runs each to
// success and records what ran where.
func (e *e2e) kubelet() int {
	ctx := context.Background()
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: loader.LabelWorkerAction})
	require.NoError(e.t, err)
	n := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || p.DeletionTimestamp != nil {
			continue
		}
		n++
		e.loads[p.Spec.NodeName] = append(e.loads[p.Spec.NodeName], p.Labels[loader.LabelWorkerAction])
		p.Status.Phase = corev1.PodSucceeded
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}
		_, err := e.cs.CoreV1().Pods(e.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		require.NoError(e.t, err)
	}
	return n
}

// settle reconciles the Module until nothing is left to do; it returns
// false when the Module is gone.
func (e *e2e) settle(name string) bool {
	ctx := context.Background()
	for i := 0; i < 40; i++ {
		m, err := e.modules.Get(ctx, e.ns, name)
		if apierrors.IsNotFound(err) {
			return false
		}
		require.NoError(e.t, err)
		res, err := e.r.Reconcile(ctx, m)
		require.NoError(e.t, err)
		if e.kubelet() == 0 && (res.RequeueAfter == 0 || res.RequeueAfter >= time.Minute) && !res.Done {
			return true
		}
	}
	e.t.Fatal("no steady state after 40 passes")
	return true
}

func (e *e2e) node(name string) *corev1.Node {
	n, err := e.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(e.t, err)
	return n
}

// TestEndToEnd creates a Module on a real kube-apiserver whose image is
// missing for one of two kernels. The native assembler builds and pushes
// it to the real registry, worker Pods load the module on the selected
// nodes (the test plays the kubelet), and labels, events, conditions and
// counts reach their final values. Then a node changes kernel, and the
// Module is deleted: every node unloads before the finalizer goes.
func TestEndToEnd(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	regs := testenv.Registry(t)
	ctx := context.Background()
	testenv.InstallCRD(t, cfg, v1beta1.CRD())
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	run := fmt.Sprintf("e2e%d", rand.Uint32()%100000)
	ns := "kmmkit-" + run
	testenv.Namespace(t, cs, ns)
	_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "nic-build"},
		Data: map[string]string{"dockerfile": "# the assembler needs no Dockerfile\nFROM scratch\n"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	// Nodes: two on k56, one on k57, one that the selector leaves out.
	nodes := map[string]string{run + "-n1": k56, run + "-n2": k56, run + "-n3": k57, run + "-other": k56}
	for name, kernel := range nodes {
		labels := map[string]string{"kmmkit-e2e": run}
		if strings.HasSuffix(name, "-other") {
			labels = nil
		}
		testenv.ReadyNode(t, cs, name, labels, kernel, name+"-boot1")
	}

	// Prebuilt modules for both kernels; k56's image is pushed already.
	src := t.TempDir()
	for _, k := range []string{k56, k57} {
		// Built for k: the assembler lints what it builds.
		vermagic := []string{"vermagic=" + k + " SMP preempt mod_unload modversions "}
		for name, mod := range map[string]elftest.Module{
			"nic_core.ko": {Exports: []elftest.Export{{Name: "nic_core_fn"}}, Modinfo: vermagic},
			"nic_drv.ko":  {Needs: []elftest.Need{{Name: "nic_core_fn"}}, Modinfo: vermagic},
		} {
			p := filepath.Join(src, k, "extra", name)
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, mod.Bytes(), 0o644))
		}
	}
	rc, err := registry.NewClient()
	require.NoError(t, err)
	tls := v1beta1.TLSOptions{Insecure: true}
	repo := regs.Plain + "/" + run + "/nic"
	files, _, err := assemble.DirSource(src).Files(ctx, builderRequest(t, k56, repo+":"+k56))
	require.NoError(t, err)
	img56, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: k56, Modules: files})
	require.NoError(t, err)
	_, err = rc.Push(ctx, registry.Request{Image: repo + ":" + k56, TLS: tls}, img56)
	require.NoError(t, err)

	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kmmkit-e2e"})
	pl, err := loader.NewPodLoader(cs, "quay.io/kmmkit/kmm:e2e", loader.WithEventRecorder(rec))
	require.NoError(t, err)
	asm, err := assemble.New(rc, assemble.DirSource(src))
	require.NoError(t, err)
	r, err := kmm.NewReconciler(cs, kmm.WithModuleClient(kmm.NewModuleClient(dyn)), kmm.WithRegistry(rc),
		kmm.WithBuilder(asm),
		kmm.WithNodeLoader(pl), kmm.WithEventRecorder(rec), kmm.WithLogger(testr.New(t)))
	require.NoError(t, err)
	e := &e2e{t: t, cs: cs, modules: kmm.NewModuleClient(dyn), r: r, ns: ns, loads: map[string][]string{}}

	mod := nicModule()
	mod.Namespace = ns
	mod.Spec.Selector = map[string]string{"kmmkit-e2e": run}
	mod.Spec.ModuleLoader.Container.Modprobe.ModuleName = "nic_drv"
	mod.Spec.ModuleLoader.Container.RegistryTLS = tls
	mod.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = repo + ":${KERNEL_FULL_VERSION}"
	_, err = e.modules.Create(ctx, mod)
	require.NoError(t, err)
	require.True(t, e.settle("nic"))

	// The missing image was built and pushed; the others untouched.
	res, err := rc.Verify(ctx, registry.Request{Image: repo + ":" + k57, TLS: tls})
	require.NoError(t, err)
	assert.True(t, res.Exists, "the assembler pushed the missing image")
	m, err := e.modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	assert.Contains(t, m.Finalizers, kmm.Finalizer)
	assert.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 3}, m.Status.ModuleLoader)
	for _, typ := range []string{kmm.ConditionImagesReady, kmm.ConditionLoaded} {
		c := meta.FindStatusCondition(m.Status.Conditions, typ)
		require.NotNil(t, c, typ)
		assert.Equal(t, metav1.ConditionTrue, c.Status, "%s: %s", typ, c.Message)
	}
	assert.Equal(t, metav1.ConditionFalse, meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionDegraded).Status)
	require.Len(t, m.Status.Kernels, 2)
	assert.Equal(t, res.Digest, m.Status.Kernels[1].Digest)
	assert.Equal(t, map[string][]string{run + "-n1": {"Load"}, run + "-n2": {"Load"}, run + "-n3": {"Load"}}, e.loads,
		"one load Pod on each selected node, none elsewhere")
	ready := loader.ReadyLabel(ns, "nic")
	for name := range nodes {
		_, ok := e.node(name).Labels[ready]
		assert.Equal(t, !strings.HasSuffix(name, "-other"), ok, "ready label on %s", name)
	}
	obs, _, err := loader.ObservedOn(e.node(run+"-n3"), ns, "nic")
	require.NoError(t, err)
	assert.Equal(t, repo+":"+k57, obs.Config.ContainerImage)

	// A second pass writes nothing.
	before := m.ResourceVersion
	_, err = r.Reconcile(ctx, m)
	require.NoError(t, err)
	m, err = e.modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	assert.Equal(t, before, m.ResourceVersion)

	// The spec becomes invalid (an image without a tag): the real API
	// server stores it (the CRD cannot tell), the Reconciler refuses it,
	// writes Valid=False and touches no node and no Pod.
	m.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = repo
	m, err = e.modules.Update(ctx, m)
	require.NoError(t, err)
	nodesBefore, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "kmmkit-e2e=" + run})
	require.NoError(t, err)
	require.True(t, e.settle("nic"))
	nodesAfter, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "kmmkit-e2e=" + run})
	require.NoError(t, err)
	assert.Equal(t, nodesBefore.Items, nodesAfter.Items, "no node label, annotation or status changed")
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, pods.Items)
	m, err = e.modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	valid := meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionValid)
	require.NotNil(t, valid)
	assert.Equal(t, metav1.ConditionFalse, valid.Status)
	assert.Equal(t, string(reason.InvalidSpec), valid.Reason)
	assert.Contains(t, valid.Message, "spec.moduleLoader.container.kernelMappings[0].containerImage")
	assert.Equal(t, m.Generation, valid.ObservedGeneration)
	m.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = repo + ":${KERNEL_FULL_VERSION}"
	_, err = e.modules.Update(ctx, m)
	require.NoError(t, err)
	require.True(t, e.settle("nic"))
	assert.Equal(t, map[string][]string{run + "-n1": {"Load"}, run + "-n2": {"Load"}, run + "-n3": {"Load"}}, e.loads,
		"the valid spec again: nothing to redo")

	// n1 reboots into k57: it loads k57's image.
	n1 := e.node(run + "-n1")
	n1.Status.NodeInfo.KernelVersion, n1.Status.NodeInfo.BootID = k57, run+"-n1-boot2"
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n1, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.True(t, e.settle("nic"))
	obs, _, err = loader.ObservedOn(e.node(run+"-n1"), ns, "nic")
	require.NoError(t, err)
	assert.Equal(t, repo+":"+k57, obs.Config.ContainerImage)
	assert.Equal(t, []string{"Load", "Load"}, e.loads[run+"-n1"], "a new kernel loads directly, no unload")

	// Delete: every node unloads, then the finalizer goes.
	require.NoError(t, dyn.Resource(kmm.ModuleGVR).Namespace(ns).Delete(ctx, "nic", metav1.DeleteOptions{}))
	m, err = e.modules.Get(ctx, ns, "nic")
	require.NoError(t, err, "the finalizer holds the Module")
	assert.NotNil(t, m.DeletionTimestamp)
	assert.False(t, e.settle("nic"), "the Module is gone in the end")
	for name := range nodes {
		n := e.node(name)
		assert.NotContains(t, n.Labels, ready, name)
		assert.NotContains(t, n.Annotations, loader.ObservedAnnotation(ns, "nic"), name)
		if !strings.HasSuffix(name, "-other") {
			assert.Equal(t, "Unload", e.loads[name][len(e.loads[name])-1], "%s unloaded", name)
		}
	}

	// Events: on the Module and on the nodes.
	var seen string
	ok := assert.Eventually(t, func() bool {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		var reasons []string
		for _, ev := range evs.Items {
			reasons = append(reasons, ev.Reason)
		}
		nodeEvs, err := cs.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		loaded, unloaded := 0, 0
		for _, ev := range nodeEvs.Items {
			if ev.Annotations["module"] != ns+"/nic" {
				continue
			}
			switch ev.Reason {
			case "ModuleLoaded":
				loaded += int(max(ev.Count, 1))
			case "ModuleUnloaded":
				unloaded += int(max(ev.Count, 1))
			}
		}
		seen = fmt.Sprintf("module events %v, ModuleLoaded %d, ModuleUnloaded %d", reasons, loaded, unloaded)
		return slices.Contains(reasons, "ImageBuilt") &&
			slices.Contains(reasons, "Loaded") && loaded >= 4 && unloaded >= 3
	}, 15*time.Second, 200*time.Millisecond)
	if !ok {
		t.Log(seen)
	}
}

func builderRequest(t *testing.T, kernel, image string) builder.Request {
	k, err := kernelmap.ParseKernel(kernel)
	require.NoError(t, err)
	return builder.Request{Namespace: "ns", Module: "nic", Kernel: k, Image: image}
}
