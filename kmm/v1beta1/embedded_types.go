package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// EmbeddedModuleSpec is ModuleSpec without devicePlugin and dra, for
// operators that embed a Module's spec in their own custom resource and
// run their own device plugin (or none). Its JSON fields are exactly
// ModuleSpec's others, so a Module's spec without those two fields
// decodes into it unchanged.
//
// It exists for the size of the embedder's CRD: devicePlugin and dra are
// full container and volume specs, about 90% of ModuleSpec's generated
// OpenAPI schema. A CRD that embeds ModuleSpec is about 200 KB as JSON —
// close to the 256 KiB that `kubectl apply` can keep in its
// last-applied-configuration annotation, and over it with two embedded
// specs — while one that embeds EmbeddedModuleSpec is about 20 KB (the
// test of this type measures the CRDs that controller-gen generates).
//
// Embed it, with its own JSON name, and reconcile its ModuleSpec:
//
//	type NICDriverSpec struct {
//		Module v1beta1.EmbeddedModuleSpec `json:"module"`
//	}
//
//	r.ReconcileSpec(ctx, kmm.Object{Spec: d.Spec.Module.ModuleSpec(),
//		SpecPath: field.NewPath("spec", "module"), …})
type EmbeddedModuleSpec struct {
	// ModuleLoader loads the kernel module on the nodes.
	// +optional
	ModuleLoader *ModuleLoaderSpec `json:"moduleLoader,omitempty"`

	// ImageRepoSecret names a dockerconfigjson Secret in the owner's
	// namespace used to pull, and when building to push, the module image.
	// +optional
	ImageRepoSecret *corev1.LocalObjectReference `json:"imageRepoSecret,omitempty"`

	// Selector selects the nodes to load the module on, by equality of node
	// labels. An empty map selects every node.
	Selector map[string]string `json:"selector"`

	// Tolerations are given to every Pod created for this module, and
	// decide which tainted nodes are targeted.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// ImageRebuildTriggerGeneration, when changed, forces the module images
	// to be verified again and rebuilt when they are missing.
	// +optional
	ImageRebuildTriggerGeneration *int `json:"imageRebuildTriggerGeneration,omitempty"`
}

// ModuleSpec returns the ModuleSpec that s stands for (no device plugin,
// no DRA driver), a deep copy sharing nothing with s.
func (s *EmbeddedModuleSpec) ModuleSpec() ModuleSpec {
	c := s.DeepCopy()
	return ModuleSpec{
		ModuleLoader:                  c.ModuleLoader,
		ImageRepoSecret:               c.ImageRepoSecret,
		Selector:                      c.Selector,
		Tolerations:                   c.Tolerations,
		ImageRebuildTriggerGeneration: c.ImageRebuildTriggerGeneration,
	}
}

// ValidateEmbeddedSpec validates an EmbeddedModuleSpec found at fldPath
// with every rule ValidateSpec applies to a ModuleSpec.
func ValidateEmbeddedSpec(spec *EmbeddedModuleSpec, fldPath *field.Path) field.ErrorList {
	s := spec.ModuleSpec()
	return ValidateSpec(&s, fldPath)
}
