package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

// TestControllerLoadsAndUnloads runs the example operator against the
// test kube-apiserver and registry, playing the kubelet: a Module is
// loaded on its node through informers and the workqueue, then deleted
// and unloaded.
func TestControllerLoadsAndUnloads(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	regs := testenv.Registry(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testenv.InstallCRD(t, cfg, v1beta1.CRD())
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	run := fmt.Sprintf("cg%d", rand.Uint32()%100000)
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

	go func() { _ = Run(ctx, cfg, ns, "quay.io/kmmkit/kmm:test", testr.New(t)) }()

	mod := &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: ns}, Spec: v1beta1.ModuleSpec{
		Selector: map[string]string{"example": run},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
			RegistryTLS:    v1beta1.TLSOptions{Insecure: true},
			KernelMappings: []v1beta1.KernelMapping{{Literal: kver, ContainerImage: image}},
		}},
	}}
	modules := kmm.NewModuleClient(dyn)
	_, err = modules.Create(ctx, mod)
	require.NoError(t, err)

	// kubeletRuns waits for the worker Pod of an action and runs it.
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
	start := time.Now()
	kubeletRuns("Load")
	t.Logf("load pod after %s", time.Since(start))
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		m, err := modules.Get(ctx, ns, "nic")
		if err != nil {
			return false, nil
		}
		c := meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionLoaded)
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		_, ready := n.Labels[loader.ReadyLabel(ns, "nic")]
		return err == nil && ready && c != nil && c.Status == metav1.ConditionTrue, nil
	})
	require.NoError(t, err, "the module never became Loaded with the node's ready label")

	require.NoError(t, dyn.Resource(kmm.ModuleGVR).Namespace(ns).Delete(ctx, "nic", metav1.DeleteOptions{}))
	t.Logf("loaded after %s", time.Since(start))
	kubeletRuns("Unload")
	t.Logf("unload pod after %s", time.Since(start))
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := modules.Get(ctx, ns, "nic")
		return apierrors.IsNotFound(err), nil
	})
	require.NoError(t, err, "the Module was not released after the unload")
}
