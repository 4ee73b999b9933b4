package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
)

// ModuleLoaderSpec describes how the module is loaded on the nodes.
type ModuleLoaderSpec struct {
	// Container describes the kernel-module image and how modprobe runs.
	Container ModuleLoaderContainerSpec `json:"container"`

	// ServiceAccountName is the service account of the worker Pods.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
}

// ModuleLoaderContainerSpec holds the module-wide image settings and the
// per-kernel mappings that may override them.
type ModuleLoaderContainerSpec struct {
	// Modprobe says which module to load and how. It applies to every kernel
	// and cannot be overridden by a mapping.
	Modprobe ModprobeSpec `json:"modprobe"`

	// Version enables ordered upgrades of the module across nodes.
	// +optional
	Version string `json:"version,omitempty"`

	// ContainerImage is the default image of the mappings. It may use the
	// variables of kernelmap, such as ${KERNEL_FULL_VERSION}.
	// +optional
	ContainerImage string `json:"containerImage,omitempty"`

	// ImagePullPolicy applies to the module image.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Build is the default build of the mappings.
	// +optional
	Build *Build `json:"build,omitempty"`

	// Sign is the default signing of the mappings.
	// +optional
	Sign *Sign `json:"sign,omitempty"`

	// RegistryTLS is the default TLS setting for the module image registry.
	// +optional
	RegistryTLS TLSOptions `json:"registryTLS,omitempty,omitzero"`

	// KernelMappings select the image for each node kernel, in list order:
	// the first mapping that matches wins.
	// +kubebuilder:validation:MinItems=1
	KernelMappings []KernelMapping `json:"kernelMappings"`

	// InTreeModulesToRemove are unloaded before the module is loaded.
	// +optional
	InTreeModulesToRemove []string `json:"inTreeModulesToRemove,omitempty"`

	// InTreeModuleToRemove is the deprecated single form of
	// InTreeModulesToRemove.
	// +optional
	InTreeModuleToRemove string `json:"inTreeModuleToRemove,omitempty"`
}

// KernelMapping selects an image, and how to build or sign it, for the
// kernels it matches. Exactly one of Literal and Regexp is set.
type KernelMapping struct {
	// Build overrides or completes the module-wide build.
	// +optional
	Build *Build `json:"build,omitempty"`

	// Sign overrides or completes the module-wide signing.
	// +optional
	Sign *Sign `json:"sign,omitempty"`

	// ContainerImage is the image for the matched kernels; empty means the
	// module-wide ContainerImage. The key is always written, as KMM's CRD
	// requires it.
	ContainerImage string `json:"containerImage"`

	// Literal matches a kernel version exactly.
	// +optional
	Literal string `json:"literal,omitempty"`

	// Regexp matches kernel versions with a Go regular expression. It is not
	// anchored: write ^ and $ to match the whole version.
	// +optional
	Regexp string `json:"regexp,omitempty"`

	// RegistryTLS overrides the module-wide registry TLS setting.
	// +optional
	RegistryTLS *TLSOptions `json:"registryTLS,omitempty,omitzero"`

	// InTreeModulesToRemove overrides the module-wide list.
	// +optional
	InTreeModulesToRemove []string `json:"inTreeModulesToRemove,omitempty"`

	// InTreeModuleToRemove is the deprecated single form of
	// InTreeModulesToRemove.
	// +optional
	InTreeModuleToRemove string `json:"inTreeModuleToRemove,omitempty"`
}

// ModprobeSpec says which module to load and how modprobe is called.
type ModprobeSpec struct {
	// ModuleName is the module to load. It is required unless RawArgs is
	// set.
	// +optional
	ModuleName string `json:"moduleName,omitempty"`

	// Parameters are key=value module parameters.
	// +optional
	Parameters []string `json:"parameters,omitempty"`

	// DirName is the directory in the image that holds lib/modules.
	// +optional
	// +kubebuilder:default=/opt
	DirName string `json:"dirName,omitempty"`

	// Args are extra modprobe arguments, placed before the module name.
	// +optional
	Args *ModprobeArgs `json:"args,omitempty"`

	// RawArgs replace the whole modprobe command line; every other field
	// here is then ignored.
	// +optional
	RawArgs *ModprobeArgs `json:"rawArgs,omitempty"`

	// FirmwarePath is a directory in the image whose files are copied to
	// the node's firmware directory.
	// +optional
	FirmwarePath string `json:"firmwarePath,omitempty"`

	// ModulesLoadingOrder lists ModuleName first, then the modules it
	// depends on, in the order they must be loaded last to first.
	// +optional
	ModulesLoadingOrder []string `json:"modulesLoadingOrder,omitempty"`
}

// ModprobeArgs are modprobe arguments for loading and for unloading. As in
// KMM's CRD, each list is optional but, when present, not empty.
type ModprobeArgs struct {
	// Load are the arguments used to load.
	// +optional
	// +kubebuilder:validation:MinItems=1
	Load []string `json:"load,omitempty"`

	// Unload are the arguments used to unload.
	// +optional
	// +kubebuilder:validation:MinItems=1
	Unload []string `json:"unload,omitempty"`
}

// Build describes how to build the module image from a Dockerfile.
type Build struct {
	// BuildArgs are passed to the build. Their values are not templated.
	// +optional
	BuildArgs []BuildArg `json:"buildArgs,omitempty"`

	// DockerfileConfigMap names a ConfigMap whose key "dockerfile" holds the
	// Dockerfile.
	DockerfileConfigMap *corev1.LocalObjectReference `json:"dockerfileConfigMap"`

	// BaseImageRegistryTLS applies to the images of FROM lines.
	// +optional
	BaseImageRegistryTLS TLSOptions `json:"baseImageRegistryTLS,omitempty,omitzero"`

	// Secrets are mounted at /run/secrets/<name> during the build.
	// +optional
	Secrets []corev1.LocalObjectReference `json:"secrets,omitempty"`

	// KanikoParams tune the Kaniko builder.
	// +optional
	KanikoParams *KanikoParams `json:"kanikoParams,omitempty"`

	// Selector is the node selector of the build.
	// +optional
	Selector map[string]string `json:"selector,omitempty"`
}

// BuildArg is one build argument.
type BuildArg struct {
	// Name of the argument.
	Name string `json:"name"`

	// Value of the argument.
	Value string `json:"value"`
}

// KanikoParams tune the Kaniko builder.
type KanikoParams struct {
	// Tag replaces the tag of the Kaniko executor image.
	// +optional
	Tag string `json:"tag,omitempty"`
}

// Sign describes how to sign the modules of an image.
type Sign struct {
	// UnsignedImage is the image to sign when no build is defined. It may
	// use kernelmap variables.
	// +optional
	UnsignedImage string `json:"unsignedImage,omitempty"`

	// UnsignedImageRegistryTLS applies to pulling UnsignedImage.
	// +optional
	UnsignedImageRegistryTLS TLSOptions `json:"unsignedImageRegistryTLS,omitempty,omitzero"`

	// KeySecret names a Secret whose key "key" holds the private key.
	// +kubebuilder:validation:Required
	KeySecret *corev1.LocalObjectReference `json:"keySecret,omitempty"`

	// CertSecret names a Secret whose key "cert" holds the public
	// certificate.
	// +kubebuilder:validation:Required
	CertSecret *corev1.LocalObjectReference `json:"certSecret,omitempty"`

	// FilesToSign are the absolute paths, or shell globs, of the modules to
	// sign, all under modprobe.dirName. They may use kernelmap variables.
	// +optional
	FilesToSign []string `json:"filesToSign,omitempty"`
}

// TLSOptions say how to reach a registry.
type TLSOptions struct {
	// Insecure uses plain HTTP.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// InsecureSkipTLSVerify accepts any server certificate.
	// +optional
	InsecureSkipTLSVerify bool `json:"insecureSkipTLSVerify,omitempty"`
}
