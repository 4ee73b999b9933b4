package kmm_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	loaderfake "github.com/kmmkit/kmmkit/loader/fake"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
)

// An operator that embeds a ModuleSpec in its own resource calls
// ReconcileSpec and writes the returned status into its own status; when
// its object is being deleted, Result.Done says when to drop its
// finalizer. In a cluster the loader is loader.NewPodLoader and the
// checker a registry.Client; here they are fakes.
func ExampleReconciler_ReconcileSpec() {
	ctx := context.Background()
	cs := k8sfake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KernelVersion: "6.1.0-56-amd64", BootID: "1"}}})
	images := registryfake.New()
	images.SetExists("registry.example.com/nic:6.1.0-56-amd64", "sha256:0123")
	r, err := kmm.NewReconciler(cs, kmm.WithImageChecker(images), kmm.WithNodeLoader(loaderfake.NewNodeLoader()))
	if err != nil {
		panic(err)
	}
	spec := v1beta1.ModuleSpec{
		Selector: map[string]string{},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
			KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: "registry.example.com/nic:${KERNEL_FULL_VERSION}"}},
		}},
	}
	// SpecPath is where the spec sits in the caller's own resource: the
	// field paths of validation errors start there.
	res, err := r.ReconcileSpec(ctx, kmm.Object{Namespace: "drivers", Name: "nic", Spec: spec, SpecPath: field.NewPath("spec", "module")})
	if err != nil {
		panic(err)
	}
	for _, c := range res.Status.Conditions {
		fmt.Println(c.Type, c.Status, c.Reason)
	}
	fmt.Println("available:", res.Status.ModuleLoader.AvailableNumber)
	// Output:
	// Valid True Valid
	// ImagesReady True AllImagesReady
	// Loaded True AllNodesLoaded
	// Degraded False AsExpected
	// available: 1
}
