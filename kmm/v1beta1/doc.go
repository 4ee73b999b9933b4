// Package v1beta1 holds the Module API of Kernel Module Management, group
// kmm.sigs.x-k8s.io, version v1beta1.
//
// The Go types marshal to exactly the JSON that the KMM operator's Module
// custom resource uses, so an existing KMM manifest decodes unchanged and a
// Module written here can be applied to a cluster that runs KMM. Every type
// has generated DeepCopy methods, so an operator can embed [ModuleSpec] in
// its own custom resource.
//
// Four groups of functions work on the types:
//
//   - [DecodeModules] and [DecodeModule] read YAML or JSON manifests strictly:
//     an unknown or duplicated field is an error that names its path. The
//     embedded Kubernetes types know the fields of [KubernetesAPIVersion];
//     [AcceptNewerKubernetesFields] drops a newer one with a warning.
//   - [Validate], [ValidateUpdate] and [ValidateSpec] apply every rule that
//     KMM's admission webhook and CRD schema apply, and report all problems at
//     once with their field paths; [WithKubernetesVersion] adds the rules
//     that depend on the cluster's version.
//   - [ReadManifest] reads every object of a manifest stream, of any kind,
//     one document's failure not hiding the next; its methods decode a
//     Module, or a spec embedded at a path, and report every unknown field
//     (suggesting the nearest known name), duplicate key and value of the
//     wrong type with its field path and line.
//   - [AddToScheme] registers Module and ModuleList with a runtime.Scheme.
//
// [EmbeddedModuleSpec] is ModuleSpec without devicePlugin and dra, for an
// operator's own CRD: its generated schema is a tenth of ModuleSpec's.
//
// +kubebuilder:object:generate=true
// +groupName=kmm.sigs.x-k8s.io
package v1beta1
