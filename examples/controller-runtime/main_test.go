package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/controllerruntime/fakekubelet"
	"github.com/kmmkit/kmmkit/examples/controller-runtime/api"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// TestOperator runs the example operator on the test kube-apiserver and
// registry, as its ServiceAccount bound to exactly config/role.yaml (the
// generated role), playing the kubelet: a NICDriver's embedded module is
// loaded on its node, its status filled, and unloaded when it is deleted.
func TestOperator(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	regs := testenv.Registry(t)
	manifest, err := os.ReadFile("config/example.kmmkit.io_nicdrivers.yaml")
	require.NoError(t, err)
	testenv.InstallCRD(t, cfg, manifest)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	run := fmt.Sprintf("cr%d", rand.Uint32()%100000)
	ns := "kmmkit-" + run
	testenv.Namespace(t, cs, ns)

	const kver = "6.1.0-56-amd64"
	node := run + "-node"
	testenv.ReadyNode(t, cs, node, map[string]string{"example": run}, kver, "boot-1")
	image := regs.Plain + "/" + run + "/nic:" + kver
	img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kver, Modules: []assemble.File{{Path: "extra/nic.ko", Data: elftest.Module{}.Bytes()}}})
	require.NoError(t, err)
	rc, err := registry.NewClient()
	require.NoError(t, err)
	_, err = rc.Push(ctx, registry.Request{Image: image, TLS: v1beta1.TLSOptions{Insecure: true}}, img)
	require.NoError(t, err)

	// The operator runs as a ServiceAccount bound to config/role.yaml.
	raw, err := os.ReadFile("config/role.yaml")
	require.NoError(t, err)
	var role rbacv1.ClusterRole
	require.NoError(t, yaml.Unmarshal(raw, &role))
	role.Name = "nicdriver-operator-" + run
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{}) })
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nicdriver-operator"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "nicdriver-operator", Namespace: ns}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	asOperator := rest.CopyConfig(cfg)
	asOperator.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":nicdriver-operator",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}

	mgr, err := NewManager(asOperator, "quay.io/kmmkit/kmm:test", ctrl.Options{
		Logger:                 testr.New(t),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}, ByObject: map[client.Object]cache.ByObject{&corev1.Node{}: {}}},
		Controller:             config.Controller{SkipNameValidation: ptrTrue()},
	})
	require.NoError(t, err)
	kubelet, err := fakekubelet.Start(ctx, cs, fakekubelet.Options{Namespace: ns, Identity: Identity})
	require.NoError(t, err)
	go func() { _ = mgr.Start(ctx) }()

	c, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme()})
	require.NoError(t, err)
	d := &api.NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: ns}, Spec: api.NICDriverSpec{QueuesPerPort: 4, Module: v1beta1.EmbeddedModuleSpec{
		Selector: map[string]string{"example": run},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
			RegistryTLS:    v1beta1.TLSOptions{Insecure: true},
			KernelMappings: []v1beta1.KernelMapping{{Literal: kver, ContainerImage: image}},
		}},
	}}}
	require.NoError(t, c.Create(ctx, d))

	wctx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	require.NoError(t, kubelet.Wait(wctx, loader.ActionLoad, 1), "no Load worker Pod")
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var got api.NICDriver
		if err := c.Get(ctx, client.ObjectKeyFromObject(d), &got); err != nil {
			return false, nil
		}
		cond := meta.FindStatusCondition(got.Status.Module.Conditions, kmm.ConditionLoaded)
		return cond != nil && cond.Status == metav1.ConditionTrue && got.Status.Module.ModuleLoader.AvailableNumber == 1, nil
	})
	require.NoError(t, err, "the NICDriver's status never showed the module loaded")

	// No webhook guards the embedded spec, so the API server stores an
	// invalid one; kmmkit refuses it, naming the operator's own field, and
	// creates no worker.
	bad := &api.NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}, Spec: api.NICDriverSpec{Module: v1beta1.EmbeddedModuleSpec{
		Selector: map[string]string{"example": run},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			RegistryTLS:    v1beta1.TLSOptions{Insecure: true},
			KernelMappings: []v1beta1.KernelMapping{{Literal: kver, ContainerImage: image}},
		}},
	}}}
	require.NoError(t, c.Create(ctx, bad))
	var valid *metav1.Condition
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var got api.NICDriver
		if err := c.Get(ctx, client.ObjectKeyFromObject(bad), &got); err != nil {
			return false, nil
		}
		valid = meta.FindStatusCondition(got.Status.Module.Conditions, kmm.ConditionValid)
		return valid != nil, nil
	})
	require.NoError(t, err, "the invalid NICDriver got no Valid condition")
	require.Equal(t, metav1.ConditionFalse, valid.Status)
	require.Equal(t, string(reason.InvalidSpec), valid.Reason)
	require.Contains(t, valid.Message, "spec.module.moduleLoader.container.modprobe.")
	_, err = cs.CoreV1().Pods(ns).Get(ctx, Identity.Owner(ns, "bad").WorkerPodName(node), metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "no worker Pod for the invalid NICDriver: %v", err)
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	require.NoError(t, err)
	require.Contains(t, n.Labels, Identity.Owner(ns, "nic").ReadyLabel(), "the NICDriver's own label")
	require.NotContains(t, n.Labels, Identity.Owner(ns, "bad").ReadyLabel())
	require.NoError(t, c.Delete(ctx, bad))

	require.NoError(t, c.Delete(ctx, d))
	require.NoError(t, kubelet.Wait(wctx, loader.ActionUnload, 1), "no Unload worker Pod")
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var got api.NICDriver
		return client.IgnoreNotFound(c.Get(ctx, client.ObjectKeyFromObject(d), &got)) == nil && got.Name == "", nil
	})
	require.NoError(t, err, "the NICDriver was not released after the unload")
}

func ptrTrue() *bool {
	b := true
	return &b
}
