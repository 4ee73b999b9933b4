package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the Module resource.
const GroupName = "kmm.sigs.x-k8s.io"

// Version is the API version these types implement.
const Version = "v1beta1"

// Kind is the kind of the Module resource.
const Kind = "Module"

// SchemeGroupVersion is the group and version of the types in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// Resource returns the group-qualified resource for a resource name, such as
// "modules".
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

// AddToScheme registers Module and ModuleList with scheme, so that client-go
// and controller-runtime clients can serve them.
func AddToScheme(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &Module{}, &ModuleList{})
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
