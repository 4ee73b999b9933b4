package v1beta1

import corev1 "k8s.io/api/core/v1"

// ModuleConfig is what a worker needs to load one Module on one node: KMM's
// NodeModulesConfig item config, and the file KMM's worker reads
// (/etc/kmm-worker/config.yaml). The JSON is field-compatible with KMM's.
type ModuleConfig struct {
	// KernelVersion is the node kernel the image was chosen for.
	KernelVersion string `json:"kernelVersion"`
	// ContainerImage is the resolved kernel-module image.
	ContainerImage string `json:"containerImage"`
	// ImagePullPolicy of the image.
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// InsecurePull pulls without TLS verification (registryTLS.insecure
	// or insecureSkipTLSVerify).
	// +optional
	InsecurePull bool `json:"insecurePull,omitempty"`
	// InTreeModulesToRemove are unloaded first.
	// +optional
	InTreeModulesToRemove []string `json:"inTreeModulesToRemove,omitempty"`
	// InTreeModuleToRemove is the deprecated single form.
	// +optional
	InTreeModuleToRemove string `json:"inTreeModuleToRemove,omitempty"`
	// Modprobe says what to load and how.
	Modprobe ModprobeSpec `json:"modprobe"`
}
