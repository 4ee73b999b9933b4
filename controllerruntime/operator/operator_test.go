package operator_test

import (
	"context"
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
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kmmkit/kmmkit/controllerruntime/cached"
	"github.com/kmmkit/kmmkit/controllerruntime/fakekubelet"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/crtest"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/testapi"
	"github.com/kmmkit/kmmkit/controllerruntime/operator"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
)

const kver = "6.1.0-56-amd64"

func loaderSpec(sel map[string]string, module, image string) v1beta1.ModuleSpec {
	return v1beta1.ModuleSpec{Selector: sel, ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
		Modprobe:       v1beta1.ModprobeSpec{ModuleName: module},
		RegistryTLS:    v1beta1.TLSOptions{Insecure: true},
		KernelMappings: []v1beta1.KernelMapping{{Literal: kver, ContainerImage: image}},
	}}}
}

// cluster gives a test a namespace, a node labelled run=<env.Run> on kver,
// and an image on the plain registry that holds module.
func cluster(t *testing.T, suffix, module string) (env *crtest.Env, ns, node, image string) {
	env = crtest.New(t)
	regs := testenv.Registry(t)
	ns = env.Namespace(t, suffix)
	node = env.Run + "-node"
	env.ReadyNode(t, node, map[string]string{"run": env.Run}, kver, "boot-1")
	image = regs.Plain + "/" + env.Run + "/" + module + ":" + kver
	crtest.PushModule(t, image, kver, module)
	return env, ns, node, image
}

func condition(st v1beta1.ModuleStatus, typ string) *metav1.Condition {
	return meta.FindStatusCondition(st.Conditions, typ)
}

// TestSetupModule drives KMM's Module with the controller SetupModule
// makes, on the test kube-apiserver and registry, with a fake kubelet:
// the Module gets its finalizer, loads on its node (status, node label,
// event), an invalid Module is refused without a finalizer or a worker,
// and a deleted Module unloads before it goes.
func TestSetupModule(t *testing.T) {
	env, ns, node, image := cluster(t, "mod", "nic")
	ctx := context.Background()

	opts := env.Options(t, ns)
	opts.Cache.ByObject = cached.ByObject(identity.Domain{})
	mgr, err := ctrl.NewManager(env.Config, opts)
	require.NoError(t, err)
	require.NoError(t, operator.SetupModule(mgr, operator.Options{WorkerImage: "quay.io/kmmkit/kmm:test"}))
	kctx := crtest.Context(t)
	kubelet, err := fakekubelet.Start(kctx, env.Clientset, fakekubelet.Options{Namespace: ns})
	require.NoError(t, err)
	crtest.Start(t, mgr)

	m := &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nic"}, Spec: loaderSpec(map[string]string{"run": env.Run}, "nic", image)}
	require.NoError(t, env.Client.Create(ctx, m))
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, kubelet.Wait(wctx, loader.ActionLoad, 1))
	crtest.Eventually(t, "the Module never showed the module loaded", func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return false, err
		}
		c := condition(m.Status, kmm.ConditionLoaded)
		return c != nil && c.Status == metav1.ConditionTrue && m.Status.ModuleLoader.AvailableNumber == 1, nil
	})
	assert.Contains(t, m.Finalizers, kmm.Finalizer)
	n, err := env.Clientset.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, n.Labels, identity.Domain{}.Owner(ns, "nic").ReadyLabel())
	crtest.Eventually(t, "no ModuleLoaded event", func(ctx context.Context) (bool, error) {
		evs, err := env.Clientset.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "reason=ModuleLoaded"})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == node && strings.Contains(e.Message, ns+"/nic") {
				return true, nil
			}
		}
		return false, nil
	})

	bad := &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"}, Spec: loaderSpec(map[string]string{"run": env.Run}, "", image)}
	require.NoError(t, env.Client.Create(ctx, bad))
	crtest.Eventually(t, "the invalid Module got no Valid condition", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(bad), bad)
		return err == nil && condition(bad.Status, kmm.ConditionValid) != nil, err
	})
	valid := condition(bad.Status, kmm.ConditionValid)
	assert.Equal(t, metav1.ConditionFalse, valid.Status)
	assert.Equal(t, string(reason.InvalidSpec), valid.Reason)
	assert.Contains(t, valid.Message, "spec.moduleLoader.container.modprobe.rawArgs.load: Required value")
	assert.NotContains(t, bad.Finalizers, kmm.Finalizer)
	_, err = env.Clientset.CoreV1().Pods(ns).Get(ctx, loader.WorkerPodName(node, "bad"), metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "a worker for the invalid Module: %v", err)

	require.NoError(t, env.Client.Delete(ctx, m))
	require.NoError(t, kubelet.Wait(wctx, loader.ActionUnload, 1))
	crtest.Eventually(t, "the Module was not released after the unload", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), &v1beta1.Module{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	n, err = env.Clientset.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, n.Labels, identity.Domain{}.Owner(ns, "nic").ReadyLabel())
}

var (
	accelID        = identity.Domain{Name: "accel.test.kmmkit.io", Kind: "Accel"}
	clusterAccelID = identity.Domain{Name: "accel.test.kmmkit.io", Kind: "ClusterAccel"}
)

func accels() operator.Embedded[*testapi.Accel] {
	return operator.Embedded[*testapi.Accel]{
		Identity: accelID,
		New:      func() *testapi.Accel { return &testapi.Accel{} },
		NewList:  func() client.ObjectList { return &testapi.AccelList{} },
		Spec:     func(a *testapi.Accel) v1beta1.ModuleSpec { return a.Spec.Driver },
		Status:   func(a *testapi.Accel) *v1beta1.ModuleStatus { return &a.Status.Driver },
		SpecPath: field.NewPath("spec", "driver"),
	}
}

func clusterAccels() operator.Embedded[*testapi.ClusterAccel] {
	return operator.Embedded[*testapi.ClusterAccel]{
		Identity:     clusterAccelID,
		New:          func() *testapi.ClusterAccel { return &testapi.ClusterAccel{} },
		NewList:      func() client.ObjectList { return &testapi.ClusterAccelList{} },
		Spec:         func(a *testapi.ClusterAccel) v1beta1.ModuleSpec { return a.Spec.Driver },
		Status:       func(a *testapi.ClusterAccel) *v1beta1.ModuleStatus { return &a.Status.Driver },
		SpecPath:     field.NewPath("spec", "driver"),
		PodNamespace: func(a *testapi.ClusterAccel) string { return a.Spec.PodNamespace },
	}
}

func testManager(t *testing.T, env *crtest.Env, namespaces ...string) ctrl.Manager {
	require.NoError(t, testapi.AddToScheme(env.Scheme))
	env.InstallCRDs(t, testapi.CRDs)
	mgr, err := ctrl.NewManager(env.Config, env.Options(t, namespaces...))
	require.NoError(t, err)
	return mgr
}

// TestSetupEmbedded drives two kinds of a test operator that embed a
// ModuleSpec: a cluster-scoped ClusterAccel whose Pods run in a namespace
// it names loads, shows it in its own status, owns its worker and is
// released after the unload; a namespaced Accel whose worker fails shows
// WorkerFailed with the worker's message, naming the node.
func TestSetupEmbedded(t *testing.T) {
	env, ns, node, image := cluster(t, "emb", "accel")
	ctx := context.Background()
	mgr := testManager(t, env, ns)
	workerImage := operator.Options{WorkerImage: "quay.io/kmmkit/kmm:test"}
	require.NoError(t, operator.SetupEmbedded(mgr, clusterAccels(), workerImage))
	require.NoError(t, operator.SetupEmbedded(mgr, accels(), workerImage))
	kctx := crtest.Context(t)
	clusterKubelet, err := fakekubelet.Start(kctx, env.Clientset, fakekubelet.Options{Namespace: ns, Identity: clusterAccelID})
	require.NoError(t, err)
	_, err = fakekubelet.Start(kctx, env.Clientset, fakekubelet.Options{Namespace: ns, Identity: accelID,
		Fail: func(*corev1.Pod) string { return "finit_module accel.ko: Key was rejected by service" }})
	require.NoError(t, err)
	crtest.Start(t, mgr)

	ca := &testapi.ClusterAccel{ObjectMeta: metav1.ObjectMeta{Name: env.Run + "-accel"},
		Spec: testapi.AccelSpec{PodNamespace: ns, Driver: loaderSpec(map[string]string{"run": env.Run}, "accel", image)}}
	require.NoError(t, env.Client.Create(ctx, ca))
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), ca) })
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, clusterKubelet.Wait(wctx, loader.ActionLoad, 1))
	crtest.Eventually(t, "the ClusterAccel never showed the module loaded", func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ca), ca); err != nil {
			return false, err
		}
		c := condition(ca.Status.Driver, kmm.ConditionLoaded)
		return c != nil && c.Status == metav1.ConditionTrue, nil
	})
	assert.Contains(t, ca.Finalizers, "accel.test.kmmkit.io/clusteraccel-unload")
	pods := clusterKubelet.Pods()
	require.Len(t, pods, 1)
	assert.Equal(t, ns, pods[0].Namespace)
	ref := metav1.GetControllerOf(pods[0])
	require.NotNil(t, ref, "the worker has no controller")
	assert.Equal(t, "ClusterAccel", ref.Kind)
	assert.Equal(t, ca.UID, ref.UID)

	a := &testapi.Accel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "failing"},
		Spec: testapi.AccelSpec{Driver: loaderSpec(map[string]string{"run": env.Run}, "accel", image)}}
	require.NoError(t, env.Client.Create(ctx, a))
	var degraded *metav1.Condition
	crtest.Eventually(t, "the failing Accel never showed Degraded", func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
			return false, err
		}
		degraded = condition(a.Status.Driver, kmm.ConditionDegraded)
		return degraded != nil && degraded.Status == metav1.ConditionTrue, nil
	})
	assert.Equal(t, string(reason.WorkerFailed), degraded.Reason)
	assert.Contains(t, degraded.Message, node)
	assert.Contains(t, degraded.Message, "Key was rejected by service")
	loaded := condition(a.Status.Driver, kmm.ConditionLoaded)
	require.NotNil(t, loaded)
	assert.NotEqual(t, metav1.ConditionTrue, loaded.Status)

	require.NoError(t, env.Client.Delete(ctx, ca))
	require.NoError(t, clusterKubelet.Wait(wctx, loader.ActionUnload, 1))
	crtest.Eventually(t, "the ClusterAccel was not released after the unload", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(ca), &testapi.ClusterAccel{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// TestSetupEmbeddedRefusesMistakes names what is wrong with an Embedded.
func TestSetupEmbeddedRefusesMistakes(t *testing.T) {
	env := crtest.New(t)
	mgr := testManager(t, env)
	opts := operator.Options{WorkerImage: "quay.io/kmmkit/kmm:test"}

	e := clusterAccels()
	e.PodNamespace = nil
	assert.ErrorContains(t, operator.SetupEmbedded(mgr, e, opts), "ClusterAccel is cluster-scoped: Embedded.PodNamespace must name")
	n := accels()
	n.PodNamespace = func(*testapi.Accel) string { return "x" }
	assert.ErrorContains(t, operator.SetupEmbedded(mgr, n, opts), "Accel is namespaced")
	n = accels()
	n.Identity = identity.Domain{}
	assert.ErrorContains(t, operator.SetupEmbedded(mgr, n, opts), "Embedded.Identity is KMM's")
	n = accels()
	n.Identity.Kind = "Widget"
	assert.ErrorContains(t, operator.SetupEmbedded(mgr, n, opts), "the object's kind is Accel")
	n = accels()
	n.Status = nil
	assert.ErrorContains(t, operator.SetupEmbedded(mgr, n, opts), "needs New, NewList, Spec and Status")
	assert.ErrorContains(t, operator.SetupEmbedded(mgr, accels(), operator.Options{}), "Options.WorkerImage is empty")

	bare := env.Options(t)
	bare.Scheme = runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(bare.Scheme))
	withoutModules, err := ctrl.NewManager(env.Config, bare)
	require.NoError(t, err)
	assert.ErrorContains(t, operator.SetupModule(withoutModules, opts), "add v1beta1.AddToScheme")
}
