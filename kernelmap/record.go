package kernelmap

import (
	"encoding/json"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Record is a Module resolved for one kernel: the image to use, and how to
// build, sign and load it. It is KMM's ModuleLoaderData. A Record is
// immutable: every accessor returns a copy, so it can be shared between
// goroutines and cached.
type Record struct {
	moduleName      string
	namespace       string
	kernel          Kernel
	mappingIndex    int
	image           string
	pullPolicy      corev1.PullPolicy
	registryTLS     v1beta1.TLSOptions
	build           *v1beta1.Build
	sign            *v1beta1.Sign
	inTree          []string
	modprobe        v1beta1.ModprobeSpec
	version         string
	serviceAccount  string
	imageRepoSecret *corev1.LocalObjectReference
	selector        map[string]string
	tolerations     []corev1.Toleration
}

// ModuleName returns the Module's name.
func (r *Record) ModuleName() string { return r.moduleName }

// Namespace returns the Module's namespace.
func (r *Record) Namespace() string { return r.namespace }

// Kernel returns the kernel the record is for.
func (r *Record) Kernel() Kernel { return r.kernel }

// MappingIndex returns the index of the kernel mapping that matched.
func (r *Record) MappingIndex() int { return r.mappingIndex }

// Image returns the resolved kernel-module image, variables substituted.
func (r *Record) Image() string { return r.image }

// ImagePullPolicy returns the Module's image pull policy.
func (r *Record) ImagePullPolicy() corev1.PullPolicy { return r.pullPolicy }

// RegistryTLS returns the TLS options of the image's registry.
func (r *Record) RegistryTLS() v1beta1.TLSOptions { return r.registryTLS }

// Build returns the merged build, or nil when the image is not built.
func (r *Record) Build() *v1beta1.Build { return r.build.DeepCopy() }

// Sign returns the merged signing with its variables substituted, or nil
// when the modules are not signed.
func (r *Record) Sign() *v1beta1.Sign { return r.sign.DeepCopy() }

// InTreeModulesToRemove returns the in-tree modules to unload first.
func (r *Record) InTreeModulesToRemove() []string { return slices.Clone(r.inTree) }

// Modprobe returns how the module is loaded; DirName is always set.
func (r *Record) Modprobe() v1beta1.ModprobeSpec { return *r.modprobe.DeepCopy() }

// ModuleVersion returns the Module's version, for ordered upgrades.
func (r *Record) ModuleVersion() string { return r.version }

// ServiceAccountName returns the service account of worker Pods.
func (r *Record) ServiceAccountName() string { return r.serviceAccount }

// ImageRepoSecret returns the pull (and push) secret, or nil.
func (r *Record) ImageRepoSecret() *corev1.LocalObjectReference {
	if r.imageRepoSecret == nil {
		return nil
	}
	s := *r.imageRepoSecret
	return &s
}

// Selector returns the Module's node selector.
func (r *Record) Selector() map[string]string { return maps.Clone(r.selector) }

// Tolerations returns the Module's tolerations followed by
// InternalTolerations.
func (r *Record) Tolerations() []corev1.Toleration {
	out := make([]corev1.Toleration, len(r.tolerations))
	for i := range r.tolerations {
		r.tolerations[i].DeepCopyInto(&out[i])
	}
	return out
}

// recordJSON is the JSON form of a Record.
type recordJSON struct {
	Module                string                       `json:"module"`
	Namespace             string                       `json:"namespace,omitempty"`
	Kernel                kernelJSON                   `json:"kernel"`
	MappingIndex          int                          `json:"mappingIndex"`
	ContainerImage        string                       `json:"containerImage"`
	ImagePullPolicy       corev1.PullPolicy            `json:"imagePullPolicy,omitempty"`
	RegistryTLS           v1beta1.TLSOptions           `json:"registryTLS"`
	Build                 *v1beta1.Build               `json:"build,omitempty"`
	Sign                  *v1beta1.Sign                `json:"sign,omitempty"`
	InTreeModulesToRemove []string                     `json:"inTreeModulesToRemove,omitempty"`
	Modprobe              v1beta1.ModprobeSpec         `json:"modprobe"`
	Version               string                       `json:"version,omitempty"`
	ServiceAccountName    string                       `json:"serviceAccountName,omitempty"`
	ImageRepoSecret       *corev1.LocalObjectReference `json:"imageRepoSecret,omitempty"`
	Selector              map[string]string            `json:"selector"`
	Tolerations           []corev1.Toleration          `json:"tolerations,omitempty"`
}

// kernelJSON is the JSON form of a Kernel with its derived names.
type kernelJSON struct {
	Version    string `json:"version"`
	Normalized string `json:"normalized"`
	XYZ        string `json:"xyz"`
	DNSName    string `json:"dnsName"`
}

// MarshalJSON writes the record as a JSON object.
func (r *Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(recordJSON{
		Module:    r.moduleName,
		Namespace: r.namespace,
		Kernel: kernelJSON{
			Version:    r.kernel.Version,
			Normalized: r.kernel.Normalized,
			XYZ:        r.kernel.XYZ(),
			DNSName:    r.kernel.DNSName(),
		},
		MappingIndex:          r.mappingIndex,
		ContainerImage:        r.image,
		ImagePullPolicy:       r.pullPolicy,
		RegistryTLS:           r.registryTLS,
		Build:                 r.build,
		Sign:                  r.sign,
		InTreeModulesToRemove: r.inTree,
		Modprobe:              r.modprobe,
		Version:               r.version,
		ServiceAccountName:    r.serviceAccount,
		ImageRepoSecret:       r.imageRepoSecret,
		Selector:              r.selector,
		Tolerations:           r.tolerations,
	})
}
