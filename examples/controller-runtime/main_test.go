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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kmmkit/kmmkit/builder/assemble"
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
// registry, playing the kubelet: a NICDriver's embedded module is loaded
// on its node, its status filled, and unloaded when it is deleted.
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

	mgr, err := NewManager(cfg, "quay.io/kmmkit/kmm:test", ctrl.Options{
		Logger:                 testr.New(t),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}, ByObject: map[client.Object]cache.ByObject{&corev1.Node{}: {}}},
		Controller:             config.Controller{SkipNameValidation: ptrTrue()},
	})
	require.NoError(t, err)
	go func() { _ = mgr.Start(ctx) }()

	c, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme()})
	require.NoError(t, err)
	d := &api.NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: ns}, Spec: api.NICDriverSpec{QueuesPerPort: 4, Module: v1beta1.ModuleSpec{
		Selector: map[string]string{"example": run},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
			RegistryTLS:    v1beta1.TLSOptions{Insecure: true},
			KernelMappings: []v1beta1.KernelMapping{{Literal: kver, ContainerImage: image}},
		}},
	}}}
	require.NoError(t, c.Create(ctx, d))

	kubeletRuns := func(action string) {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, loader.WorkerPodName(node, "nic"), metav1.GetOptions{})
			if err != nil || p.Labels[loader.LabelWorkerAction] != action || p.Status.Phase == corev1.PodSucceeded {
				return false, nil
			}
			p.Status.Phase = corev1.PodSucceeded
			_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err == nil, nil
		})
		require.NoError(t, err, "no %s worker Pod", action)
	}
	kubeletRuns("Load")
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
	bad := &api.NICDriver{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}, Spec: api.NICDriverSpec{Module: v1beta1.ModuleSpec{
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
	_, err = cs.CoreV1().Pods(ns).Get(ctx, loader.WorkerPodName(node, "bad"), metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "no worker Pod for the invalid NICDriver: %v", err)
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotContains(t, n.Labels, loader.ReadyLabel(ns, "bad"))
	require.NoError(t, c.Delete(ctx, bad))

	require.NoError(t, c.Delete(ctx, d))
	kubeletRuns("Unload")
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
