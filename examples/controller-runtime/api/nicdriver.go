// Package api is the example operator's own API: a NICDriver resource
// whose spec embeds KMM's ModuleSpec next to the operator's own fields.
package api

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// GroupVersion of the example API.
var GroupVersion = schema.GroupVersion{Group: "example.kmmkit.io", Version: "v1alpha1"}

// AddToScheme registers NICDriver.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &NICDriver{}, &NICDriverList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// NICDriver asks for a NIC driver on the nodes its module selects.
type NICDriver struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NICDriverSpec   `json:"spec"`
	Status            NICDriverStatus `json:"status,omitempty"`
}

// NICDriverSpec is the operator's own settings plus the embedded
// ModuleSpec that kmmkit reconciles.
type NICDriverSpec struct {
	// QueuesPerPort is an operator setting (not used by kmmkit).
	QueuesPerPort int `json:"queuesPerPort,omitempty"`
	// Module is KMM's ModuleSpec for the driver.
	Module v1beta1.ModuleSpec `json:"module"`
}

// NICDriverStatus holds the module's status as kmmkit reports it.
type NICDriverStatus struct {
	Module v1beta1.ModuleStatus `json:"module,omitempty"`
}

// NICDriverList is a list of NICDrivers.
type NICDriverList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NICDriver `json:"items"`
}

// DeepCopyObject implements runtime.Object.
func (d *NICDriver) DeepCopyObject() runtime.Object { return d.DeepCopy() }

// DeepCopy copies d.
func (d *NICDriver) DeepCopy() *NICDriver {
	if d == nil {
		return nil
	}
	out := &NICDriver{TypeMeta: d.TypeMeta, Spec: NICDriverSpec{QueuesPerPort: d.Spec.QueuesPerPort}}
	d.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	d.Spec.Module.DeepCopyInto(&out.Spec.Module)
	d.Status.Module.DeepCopyInto(&out.Status.Module)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *NICDriverList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &NICDriverList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range l.Items {
		out.Items = append(out.Items, *l.Items[i].DeepCopy())
	}
	return out
}
