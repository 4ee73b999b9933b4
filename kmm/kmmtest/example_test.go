package kmmtest_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
)

// A unit test of an operator's Module handling: two nodes on two kernels,
// one image in the registry; the other is built by the fake builder.
func ExampleHarness() {
	ctx := context.Background()
	h, err := kmmtest.New()
	if err != nil {
		panic(err)
	}
	_, _ = h.AddNode(ctx, "node-a", "6.1.0-56-amd64", map[string]string{"gpu": "true"})
	_, _ = h.AddNode(ctx, "node-b", "6.1.0-57-amd64", map[string]string{"gpu": "true"})
	h.Registry.SetExists("registry.example.com/gpu:6.1.0-56-amd64", "sha256:1")
	_, _ = h.Clientset.CoreV1().ConfigMaps("drivers").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-build"}, Data: map[string]string{"dockerfile": "FROM scratch\n"}}, metav1.CreateOptions{})
	_ = h.CreateModule(ctx, &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu", Namespace: "drivers"},
		Spec: v1beta1.ModuleSpec{
			Selector: map[string]string{"gpu": "true"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe: v1beta1.ModprobeSpec{ModuleName: "gpu"},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: "registry.example.com/gpu:${KERNEL_FULL_VERSION}",
					Build: &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "gpu-build"}}}},
			}},
		},
	})
	if _, err := h.ReconcileUntilStable(ctx, "drivers", "gpu", 10); err != nil {
		panic(err)
	}
	m, _ := h.Module(ctx, "drivers", "gpu")
	fmt.Println("builds:", len(h.Builder.Started()))
	fmt.Println("available:", m.Status.ModuleLoader.AvailableNumber)
	fmt.Println("node-b:", h.Loader.LoadedOn("drivers", "gpu")["node-b"].ContainerImage)
	// Output:
	// builds: 1
	// available: 2
	// node-b: registry.example.com/gpu:6.1.0-57-amd64
}

// A unit test of what a user reads when the registry refuses the pull
// secret for one kernel's image: that node is desired and not available,
// and Degraded names it, its kernel and the reason constant.
func ExampleHarness_FailImage() {
	ctx := context.Background()
	h, err := kmmtest.New()
	if err != nil {
		panic(err)
	}
	_, _ = h.AddNode(ctx, "node-a", "6.1.0-56-amd64", map[string]string{"nic": "true"})
	_, _ = h.AddNode(ctx, "node-b", "6.1.0-57-amd64", map[string]string{"nic": "true"})
	h.Registry.SetExists("registry.example.com/nic:6.1.0-56-amd64", "sha256:1")
	h.FailImage("registry.example.com/nic:6.1.0-57-amd64", reason.Unauthorized, "the registry refused pull secret drivers/pull")
	_ = h.CreateModule(ctx, &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"},
		Spec: v1beta1.ModuleSpec{
			Selector: map[string]string{"nic": "true"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: "registry.example.com/nic:${KERNEL_FULL_VERSION}"}},
			}},
		},
	})
	if _, err := h.ReconcileUntilStable(ctx, "drivers", "nic", 10); err != nil {
		panic(err)
	}
	m, _ := h.Module(ctx, "drivers", "nic")
	s := m.Status.ModuleLoader
	fmt.Printf("desired %d, available %d\n", s.DesiredNumber, s.AvailableNumber)
	for _, typ := range []string{kmm.ConditionLoaded, kmm.ConditionDegraded} {
		c := meta.FindStatusCondition(m.Status.Conditions, typ)
		fmt.Printf("%s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	// Output:
	// desired 2, available 1
	// Loaded=False Unauthorized: loaded on 1 of 2 desired node(s); not on 1: node-b (Unauthorized)
	// Degraded=True Unauthorized: 1 of 2 desired node(s) do not have the module as the spec asks: kernel 6.1.0-57-amd64 on 1 node(s) (node-b): Unauthorized: registry.example.com/nic:6.1.0-57-amd64: Unauthorized (the registry refused pull secret drivers/pull)
}
