package kmmtest_test

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// NICDriver is an embedding operator's own resource: its spec embeds an
// EmbeddedModuleSpec at spec.module, its status holds the module's.
type NICDriver struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NICDriverSpec   `json:"spec"`
	Status            NICDriverStatus `json:"status,omitempty"`
}

// NICDriverSpec is the operator's setting and the embedded spec.
type NICDriverSpec struct {
	QueuesPerPort int                        `json:"queuesPerPort,omitempty"`
	Module        v1beta1.EmbeddedModuleSpec `json:"module"`
}

// NICDriverStatus is what kmmkit reports for spec.module.
type NICDriverStatus struct {
	Module v1beta1.ModuleStatus `json:"module,omitempty"`
}

// drivers is the test's store of NICDrivers (a controller-runtime fake
// client in a real operator's tests).
type drivers struct {
	mu    sync.Mutex
	items map[string]NICDriver
}

func (s *drivers) get(_ context.Context, ns, name string) (*NICDriver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.items[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(corev1.Resource("nicdrivers"), name)
	}
	return &d, nil
}

func (s *drivers) put(d *NICDriver) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items[d.Namespace+"/"+d.Name] = *d
}

// nicDriverOwner is what an operator's tests give the harness: how to
// read a NICDriver, what it stands for, and how to write its status.
func nicDriverOwner(store *drivers) kmmtest.Owner[*NICDriver] {
	return kmmtest.Owner[*NICDriver]{
		Identity: identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"},
		Get:      store.get,
		Object: func(d *NICDriver) kmm.Object {
			return kmm.Object{
				Namespace: d.Namespace, Name: d.Name, Generation: d.Generation,
				Spec: d.Spec.Module.ModuleSpec(), Status: d.Status.Module,
				Deleting: d.DeletionTimestamp != nil,
				Owner:    metav1.NewControllerRef(d, v1beta1.SchemeGroupVersion.WithKind("NICDriver")),
				Ref:      &corev1.ObjectReference{Kind: "NICDriver", Namespace: d.Namespace, Name: d.Name},
				SpecPath: field.NewPath("spec", "module"),
			}
		},
		SetStatus: func(_ context.Context, d *NICDriver, st v1beta1.ModuleStatus) error {
			d.Status.Module = st
			store.put(d)
			return nil
		},
	}
}

// A unit test of an operator whose NICDriver embeds a module spec: an
// invalid spec is reported at its own field path and changes nothing;
// fixed, the module loads on the selected node, under the operator's own
// node labels.
func ExampleOwners() {
	ctx := context.Background()
	h, err := kmmtest.New()
	if err != nil {
		panic(err)
	}
	store := &drivers{items: map[string]NICDriver{}}
	nics, err := kmmtest.NewOwners(h, nicDriverOwner(store))
	if err != nil {
		panic(err)
	}
	_, _ = h.AddNode(ctx, "node-a", "6.1.0-56-amd64", map[string]string{"nic": "true"})
	h.Registry.SetExists("registry.example.com/nic:6.1.0-56-amd64", "sha256:1")
	store.put(&NICDriver{
		ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers", Generation: 1},
		Spec: NICDriverSpec{Module: v1beta1.EmbeddedModuleSpec{
			Selector: map[string]string{"nic": "true"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: "registry.example.com/nic"}},
			}},
		}},
	})
	before := len(h.Writes())
	if _, err := nics.ReconcileUntilStable(ctx, "drivers", "nic", 10); err != nil {
		panic(err)
	}
	d, _ := store.get(ctx, "drivers", "nic")
	valid := meta.FindStatusCondition(d.Status.Module.Conditions, kmm.ConditionValid)
	fmt.Printf("%s=%s %s: %s\n", valid.Type, valid.Status, valid.Reason, valid.Message)
	fmt.Println("cluster writes:", len(h.Writes())-before)

	d.Generation++
	d.Spec.Module.ModuleLoader.Container.KernelMappings[0].ContainerImage = "registry.example.com/nic:${KERNEL_FULL_VERSION}"
	store.put(d)
	if _, err := nics.ReconcileUntilStable(ctx, "drivers", "nic", 10); err != nil {
		panic(err)
	}
	d, _ = store.get(ctx, "drivers", "nic")
	fmt.Println("available:", d.Status.Module.ModuleLoader.AvailableNumber)
	owner := identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}.Owner("drivers", "nic")
	fmt.Println("node-a:", h.Loader.LoadedFor(owner)["node-a"].ContainerImage)
	// Output:
	// Valid=False InvalidSpec: 1 error(s): spec.module.moduleLoader.container.kernelMappings[0].containerImage: Invalid value: "registry.example.com/nic": container image must explicitly set a tag or digest
	// cluster writes: 0
	// available: 1
	// node-a: registry.example.com/nic:6.1.0-56-amd64
}
