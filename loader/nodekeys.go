package loader

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Node label and annotation prefixes.
const (
	nodeLabelPrefix      = "kmm.node.kubernetes.io/"
	observedAnnotPrefix  = "loaded.kmmkit.io/"
	maxLabelNameLength   = 63
	readySuffix          = ".ready"
	versionReadySuffix   = ".version.ready"
	observedModuleSuffix = ""
)

// keyName returns <ns>.<name><suffix>, shortened with a hash when it would
// exceed the 63 characters a label or annotation name may have. KMM does
// not shorten, so a long namespace plus name breaks its labels; kmmkit
// keeps KMM's exact key whenever it fits.
func keyName(ns, name, suffix string) string {
	s := ns + "." + name + suffix
	if len(s) <= maxLabelNameLength {
		return s
	}
	sum := sha256.Sum256([]byte(ns + "/" + name))
	h := hex.EncodeToString(sum[:5])
	keep := maxLabelNameLength - len(suffix) - len(h) - 1
	return trimKey(s[:keep]) + "-" + h + suffix
}

// trimKey drops trailing characters a label name may not end with.
func trimKey(s string) string {
	for len(s) > 0 {
		c := s[len(s)-1]
		if c == '.' || c == '-' || c == '_' {
			s = s[:len(s)-1]
			continue
		}
		break
	}
	return s
}

// ReadyLabel is the node label KMM sets while a module is loaded as its
// Module asks: kmm.node.kubernetes.io/<ns>.<name>.ready (value "").
func ReadyLabel(ns, name string) string { return nodeLabelPrefix + keyName(ns, name, readySuffix) }

// VersionReadyLabel is the node label that carries the loaded module
// version: kmm.node.kubernetes.io/<ns>.<name>.version.ready.
func VersionReadyLabel(ns, name string) string {
	return nodeLabelPrefix + keyName(ns, name, versionReadySuffix)
}

// ObservedAnnotation is the node annotation in which the worker-pod loader
// records what is loaded on the node for a module (KMM keeps this in the
// NodeModulesConfig status; kmmkit needs no CRD).
func ObservedAnnotation(ns, name string) string {
	return observedAnnotPrefix + keyName(ns, name, observedModuleSuffix)
}

// Observed is what a successful worker Pod loaded on a node: KMM's
// NodeModuleStatus.
type Observed struct {
	// Config is the loaded configuration.
	Config v1beta1.ModuleConfig `json:"config"`
	// BootID is the node's boot ID when it was loaded; another boot ID
	// means the node rebooted and the module is gone.
	BootID string `json:"bootID"`
	// Version is the Module version that was loaded.
	Version string `json:"version,omitempty"`
	// ServiceAccountName, ImageRepoSecret and Tolerations are what the
	// unload Pod needs.
	ServiceAccountName string                       `json:"serviceAccountName,omitempty"`
	ImageRepoSecret    *corev1.LocalObjectReference `json:"imageRepoSecret,omitempty"`
	Tolerations        []corev1.Toleration          `json:"tolerations,omitempty"`
}

// Request is the worker request that reproduces what was loaded: the
// unload of a module no longer wanted, or keeping it as it is.
func (o *Observed) Request() PodRequest {
	return PodRequest{Config: o.Config, ServiceAccountName: o.ServiceAccountName,
		ImageRepoSecret: o.ImageRepoSecret, Tolerations: o.Tolerations, ModuleVersion: o.Version}
}

// ObservedOn returns what the worker-pod loader recorded as loaded on node
// for the Module ns/name. ok is false when nothing is recorded; an
// annotation that does not parse is an error naming it.
func ObservedOn(node *corev1.Node, ns, name string) (obs *Observed, ok bool, err error) {
	key := ObservedAnnotation(ns, name)
	raw, ok := node.Annotations[key]
	if !ok {
		return nil, false, nil
	}
	obs = new(Observed)
	if err := json.Unmarshal([]byte(raw), obs); err != nil {
		return nil, false, fmt.Errorf("node %s: annotation %s: %w", node.Name, key, err)
	}
	return obs, true, nil
}
