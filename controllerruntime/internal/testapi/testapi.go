// Package testapi is a test operator's own API, group test.kmmkit.io:
// Accel (namespaced) and ClusterAccel (cluster-scoped) embed KMM's
// ModuleSpec at spec.driver and its status at status.driver.
package testapi

import (
	_ "embed"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// GroupVersion of the test API.
var GroupVersion = schema.GroupVersion{Group: "test.kmmkit.io", Version: "v1"}

// CRDs are the CustomResourceDefinitions of Accel and ClusterAccel.
//
//go:embed crds.yaml
var CRDs []byte

// AddToScheme registers the kinds.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Accel{}, &AccelList{}, &ClusterAccel{}, &ClusterAccelList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// AccelSpec holds the embedded ModuleSpec, and for a ClusterAccel the
// namespace of its Pods.
type AccelSpec struct {
	PodNamespace string             `json:"podNamespace,omitempty"`
	Driver       v1beta1.ModuleSpec `json:"driver"`
}

// AccelStatus holds the embedded ModuleStatus.
type AccelStatus struct {
	Driver v1beta1.ModuleStatus `json:"driver,omitempty"`
}

// Accel is namespaced.
type Accel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              AccelSpec   `json:"spec"`
	Status            AccelStatus `json:"status,omitempty"`
}

// AccelList lists Accels.
type AccelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Accel `json:"items"`
}

// ClusterAccel is cluster-scoped.
type ClusterAccel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              AccelSpec   `json:"spec"`
	Status            AccelStatus `json:"status,omitempty"`
}

// ClusterAccelList lists ClusterAccels.
type ClusterAccelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterAccel `json:"items"`
}

func (s AccelSpec) copy() AccelSpec {
	out := AccelSpec{PodNamespace: s.PodNamespace}
	s.Driver.DeepCopyInto(&out.Driver)
	return out
}

func (s AccelStatus) copy() AccelStatus {
	var out AccelStatus
	s.Driver.DeepCopyInto(&out.Driver)
	return out
}

// DeepCopyObject implements runtime.Object.
func (a *Accel) DeepCopyObject() runtime.Object {
	out := &Accel{TypeMeta: a.TypeMeta, Spec: a.Spec.copy(), Status: a.Status.copy()}
	a.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *AccelList) DeepCopyObject() runtime.Object {
	out := &AccelList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range l.Items {
		out.Items = append(out.Items, *l.Items[i].DeepCopyObject().(*Accel))
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (a *ClusterAccel) DeepCopyObject() runtime.Object {
	out := &ClusterAccel{TypeMeta: a.TypeMeta, Spec: a.Spec.copy(), Status: a.Status.copy()}
	a.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *ClusterAccelList) DeepCopyObject() runtime.Object {
	out := &ClusterAccelList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range l.Items {
		out.Items = append(out.Items, *l.Items[i].DeepCopyObject().(*ClusterAccel))
	}
	return out
}
