package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
)

// CommonContainerSpec is a container of the device plugin or DRA driver.
type CommonContainerSpec struct {
	// Args of the container.
	// +optional
	Args []string `json:"args,omitempty"`

	// Command of the container.
	// +optional
	Command []string `json:"command,omitempty"`

	// Env of the container.
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Image of the container.
	Image string `json:"image"`

	// ImagePullPolicy of the container.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Resources of the container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty,omitzero"`

	// VolumeMounts of the container.
	// +optional
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`
}

// DevicePluginSpec describes a device plugin DaemonSet.
type DevicePluginSpec struct {
	// InitContainer runs before the device plugin.
	// +optional
	InitContainer *CommonContainerSpec `json:"initContainer,omitempty"`

	// Container is the device plugin.
	Container CommonContainerSpec `json:"container"`

	// ServiceAccountName of the device plugin Pods.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Volumes of the device plugin Pods.
	// +optional
	Volumes []corev1.Volume `json:"volumes,omitempty"`

	// AutomountServiceAccountToken of the device plugin Pods.
	// +optional
	AutomountServiceAccountToken *bool `json:"automountServiceAccountToken,omitempty"`
}

// DRASpec describes a dynamic resource allocation driver. kmmkit's
// Reconciler refuses it (v1beta1.WithoutDRA).
type DRASpec struct {
	// InitContainer runs before the driver.
	// +optional
	InitContainer *CommonContainerSpec `json:"initContainer,omitempty"`

	// Container is the driver.
	Container CommonContainerSpec `json:"container"`

	// ServiceAccountName of the driver Pods.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Volumes of the driver Pods.
	// +optional
	Volumes []corev1.Volume `json:"volumes,omitempty"`

	// AutomountServiceAccountToken of the driver Pods.
	// +optional
	AutomountServiceAccountToken *bool `json:"automountServiceAccountToken,omitempty"`

	// DriverName is the DRA driver name, a DNS subdomain.
	DriverName string `json:"driverName"`

	// DeviceClasses are created for the driver.
	// +optional
	DeviceClasses []DRADeviceClass `json:"deviceClasses,omitempty"`
}

// DRADeviceClass is a DeviceClass created for the DRA driver.
type DRADeviceClass struct {
	// Name of the DeviceClass, a DNS subdomain.
	Name string `json:"name"`

	// Selectors of the DeviceClass.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Selectors []resourcev1.DeviceSelector `json:"selectors,omitempty"`

	// Config of the DeviceClass.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Config []resourcev1.DeviceClassConfiguration `json:"config,omitempty"`
}
