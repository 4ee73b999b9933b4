package kmm

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// ModuleGVR is the Module resource.
var ModuleGVR = v1beta1.SchemeGroupVersion.WithResource("modules")

// ModuleClient reads and writes Modules: what Reconcile needs to hold its
// finalizer and to write the status.
type ModuleClient interface {
	Get(ctx context.Context, namespace, name string) (*v1beta1.Module, error)
	List(ctx context.Context, namespace string) ([]v1beta1.Module, error)
	// Create stores a new Module (its status is ignored).
	Create(ctx context.Context, m *v1beta1.Module) (*v1beta1.Module, error)
	// Update writes the object (metadata and spec).
	Update(ctx context.Context, m *v1beta1.Module) (*v1beta1.Module, error)
	// UpdateStatus writes the status subresource.
	UpdateStatus(ctx context.Context, m *v1beta1.Module) (*v1beta1.Module, error)
}

// NewModuleClient returns a ModuleClient over a dynamic client (real, or
// client-go's dynamic/fake).
func NewModuleClient(dyn dynamic.Interface) ModuleClient { return dynModules{dyn} }

type dynModules struct{ dyn dynamic.Interface }

func toModule(u *unstructured.Unstructured) (*v1beta1.Module, error) {
	m := new(v1beta1.Module)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, m); err != nil {
		return nil, fmt.Errorf("module %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return m, nil
}

func toUnstructured(m *v1beta1.Module) (*unstructured.Unstructured, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(m)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetAPIVersion(v1beta1.SchemeGroupVersion.String())
	u.SetKind(v1beta1.Kind)
	return u, nil
}

func (c dynModules) Get(ctx context.Context, namespace, name string) (*v1beta1.Module, error) {
	u, err := c.dyn.Resource(ModuleGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return toModule(u)
}

func (c dynModules) List(ctx context.Context, namespace string) ([]v1beta1.Module, error) {
	l, err := c.dyn.Resource(ModuleGVR).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]v1beta1.Module, 0, len(l.Items))
	for i := range l.Items {
		m, err := toModule(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *m)
	}
	return out, nil
}

func (c dynModules) Create(ctx context.Context, m *v1beta1.Module) (*v1beta1.Module, error) {
	u, err := toUnstructured(m)
	if err != nil {
		return nil, err
	}
	delete(u.Object, "status")
	u, err = c.dyn.Resource(ModuleGVR).Namespace(m.Namespace).Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return toModule(u)
}

func (c dynModules) Update(ctx context.Context, m *v1beta1.Module) (*v1beta1.Module, error) {
	u, err := toUnstructured(m)
	if err != nil {
		return nil, err
	}
	u, err = c.dyn.Resource(ModuleGVR).Namespace(m.Namespace).Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return toModule(u)
}

func (c dynModules) UpdateStatus(ctx context.Context, m *v1beta1.Module) (*v1beta1.Module, error) {
	u, err := toUnstructured(m)
	if err != nil {
		return nil, err
	}
	u, err = c.dyn.Resource(ModuleGVR).Namespace(m.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return toModule(u)
}
