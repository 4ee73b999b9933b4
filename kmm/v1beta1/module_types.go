package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/reason"
)

// Module describes an out-of-tree kernel module: which image holds it for
// each node kernel, how to build and sign that image when it is missing, and
// how to load it on the nodes its selector targets.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=modules,scope=Namespaced
type Module struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ModuleSpec   `json:"spec,omitempty"`
	Status ModuleStatus `json:"status,omitempty,omitzero"`
}

// ModuleList is a list of Modules.
//
// +kubebuilder:object:root=true
type ModuleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []Module `json:"items"`
}

// ModuleSpec is the desired state of a Module. Operators may embed it in
// their own custom resources.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.dra) && has(self.devicePlugin))",message="spec.dra and spec.devicePlugin are mutually exclusive"
type ModuleSpec struct {
	// ModuleLoader loads the kernel module on the nodes. When nil, only the
	// device plugin or DRA driver runs.
	// +optional
	ModuleLoader *ModuleLoaderSpec `json:"moduleLoader,omitempty"`

	// DevicePlugin runs a device plugin next to the module: a DaemonSet
	// per version, on the nodes where the module is loaded, as KMM makes it.
	// +optional
	DevicePlugin *DevicePluginSpec `json:"devicePlugin,omitempty"`

	// DRA runs a dynamic resource allocation driver next to the module.
	// kmmkit's Reconciler runs no DRA driver and refuses a spec with one
	// (v1beta1.WithoutDRA).
	// +optional
	DRA *DRASpec `json:"dra,omitempty"`

	// ImageRepoSecret names a dockerconfigjson Secret in the Module's
	// namespace used to pull, and when building to push, the module image.
	// +optional
	ImageRepoSecret *corev1.LocalObjectReference `json:"imageRepoSecret,omitempty"`

	// Selector selects the nodes to load the module on, by equality of node
	// labels. An empty map selects every node.
	Selector map[string]string `json:"selector"`

	// Tolerations are given to every Pod created for this Module, and decide
	// which tainted nodes are targeted.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// ImageRebuildTriggerGeneration, when changed, forces the module images
	// to be verified again and rebuilt when they are missing.
	// +optional
	ImageRebuildTriggerGeneration *int `json:"imageRebuildTriggerGeneration,omitempty"`
}

// ModuleStatus is the observed state of a Module.
type ModuleStatus struct {
	// ModuleLoader counts the nodes of the module loader.
	// +optional
	ModuleLoader *DaemonSetStatus `json:"moduleLoader,omitempty"`

	// DevicePlugin counts the nodes of the device plugin.
	// +optional
	DevicePlugin *DaemonSetStatus `json:"devicePlugin,omitempty"`

	// DRA counts the nodes of the DRA driver.
	// +optional
	DRA *DaemonSetStatus `json:"dra,omitempty"`

	// ImageRebuildTriggerGeneration is the generation of
	// spec.imageRebuildTriggerGeneration that was last acted on.
	// +optional
	ImageRebuildTriggerGeneration *int `json:"imageRebuildTriggerGeneration,omitempty"`

	// Conditions (a kmmkit addition; KMM has none): Valid, ImagesReady,
	// Loaded and Degraded, with reasons of package
	// github.com/kmmkit/kmmkit/reason a user can act on.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Kernels (a kmmkit addition) summarises every kernel of the targeted
	// nodes: its image, the image's state, reason and build, and its nodes.
	// +optional
	Kernels []KernelStatus `json:"kernels,omitempty"`
}

// KernelStatus is the state of one kernel of a Module's nodes.
type KernelStatus struct {
	// Kernel is the node kernel version.
	Kernel string `json:"kernel"`
	// Image is the kmod image the kernel maps to ("" when none does).
	Image string `json:"image,omitempty"`
	// State is where the kernel's image stands: Ready, Building,
	// Missing, BuildFailed, SignFailed, CheckFailed, NoMapping or
	// MappingFailed (see KernelState).
	State KernelState `json:"state"`
	// Reason says why, as a constant of package
	// github.com/kmmkit/kmmkit/reason: ImageReady, or the cause of a
	// state that needs attention (Unauthorized, TLSError,
	// RegistryUnavailable, ImageNotFound, NoBuilder, BuildFailed,
	// MissingSecret, SignFailed, NoMapping, …). A kmmkit addition.
	// +optional
	Reason reason.Reason `json:"reason,omitempty"`
	// Digest is the image's digest when it is ready.
	// +optional
	Digest string `json:"digest,omitempty"`
	// Build names the build object and its phase while one exists.
	// +optional
	Build string `json:"build,omitempty"`
	// Nodes counts the targeted nodes that run this kernel.
	Nodes int32 `json:"nodes"`
	// Message explains a state that needs attention.
	// +optional
	Message string `json:"message,omitempty"`
}

// KernelState is where the image of one kernel stands, in
// KernelStatus.State. Its values are exactly:
//
//   - Ready: the image exists; the module loads from it.
//   - Building: a build is running (or its image is not in the registry
//     yet).
//   - Missing: the image does not exist and cannot be made (no build or
//     sign is defined, or no builder was given).
//   - BuildFailed: the build, or preparing it, failed.
//   - SignFailed: signing the image failed.
//   - CheckFailed: the registry could not say whether the image exists
//     (credentials, TLS, an unreachable registry).
//   - NoMapping: no kernel mapping matches the kernel.
//   - MappingFailed: a mapping matched but could not be resolved.
//
// Every state but Ready and Building leaves the kernel's nodes without the
// module and is reported by the Degraded condition; KernelStatus.Reason
// says why.
type KernelState string

// The kernel states, as listed in KernelState's doc.
const (
	KernelStateReady         KernelState = "Ready"
	KernelStateBuilding      KernelState = "Building"
	KernelStateMissing       KernelState = "Missing"
	KernelStateBuildFailed   KernelState = "BuildFailed"
	KernelStateSignFailed    KernelState = "SignFailed"
	KernelStateCheckFailed   KernelState = "CheckFailed"
	KernelStateNoMapping     KernelState = "NoMapping"
	KernelStateMappingFailed KernelState = "MappingFailed"
)

// DaemonSetStatus counts nodes with KMM's fields.
//
// For the module loader, kmmkit counts every selected node as desired:
// DesiredNumber equals NodesMatchingSelectorNumber, and a selected node
// whose kernel no mapping matches, whose image is missing, cannot be
// checked or built, or whose worker fails is desired and not available.
// KMM counts as desired only the nodes it has already handed an image to
// (NodeModulesConfig entries), so a node it cannot serve silently drops
// out of both numbers; here AvailableNumber < DesiredNumber says that
// some selected node has no driver, and the Degraded condition names it.
type DaemonSetStatus struct {
	// NodesMatchingSelectorNumber is the number of schedulable nodes that
	// match the selector.
	// +optional
	NodesMatchingSelectorNumber int32 `json:"nodesMatchingSelectorNumber,omitempty"`

	// DesiredNumber is the number of nodes that should run the module:
	// for the module loader, every schedulable node the selector matches.
	// +optional
	DesiredNumber int32 `json:"desiredNumber,omitempty"`

	// AvailableNumber is the number of desired nodes that run the module
	// as the spec asks.
	// +optional
	AvailableNumber int32 `json:"availableNumber,omitempty"`
}
