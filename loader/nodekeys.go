package loader

import (
	"regexp"

	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// kmmOwner is the default (KMM) identity of the Module ns/name.
func kmmOwner(ns, name string) identity.Owner { return identity.Domain{}.Owner(ns, name) }

// ReadyLabel is the node label KMM sets while a module is loaded as its
// Module asks: kmm.node.kubernetes.io/<ns>.<name>.ready (value ""). KMM
// does not shorten keys, so a long namespace plus name breaks its labels;
// kmmkit keeps KMM's exact key whenever it fits and ends a longer one with
// a hash. Other identities: identity.Owner.ReadyLabel.
func ReadyLabel(ns, name string) string { return kmmOwner(ns, name).ReadyLabel() }

// VersionReadyLabel is the node label that carries the loaded module
// version: kmm.node.kubernetes.io/<ns>.<name>.version.ready.
func VersionReadyLabel(ns, name string) string { return kmmOwner(ns, name).VersionReadyLabel() }

// deprecatedName is a Module name KMM 1.x labelled nodes with.
var deprecatedName = regexp.MustCompile(`^[a-zA-Z0-9-]+$`)

// deprecatedReadyLabel is the node label KMM 1.x set for the Module o,
// kmm.node.kubernetes.io/<name>.ready, which KMM removes from the nodes
// it manages and so does the loader; "" for other identities, and for
// names KMM never gave one (with a dot, the key would be another
// Module's current one).
func deprecatedReadyLabel(o identity.Owner) string {
	if !o.Domain.IsKMM() || !deprecatedName.MatchString(o.Name) || len(o.Name)+len(".ready") > 63 {
		return ""
	}
	return identity.KMMDomain + "/" + o.Name + ".ready"
}

// ObservedAnnotation is the node annotation in which the worker-pod loader
// records what is loaded on the node for a module (KMM keeps this in the
// NodeModulesConfig status; kmmkit needs no CRD):
// loaded.kmmkit.io/<ns>.<name>.
func ObservedAnnotation(ns, name string) string { return kmmOwner(ns, name).ObservedAnnotation() }

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
// for KMM's Module ns/name. ok is false when nothing is recorded; an
// annotation that does not parse is an error naming it.
func ObservedOn(node *corev1.Node, ns, name string) (obs *Observed, ok bool, err error) {
	return ObservedBy(node, kmmOwner(ns, name))
}

// ObservedBy is ObservedOn for an owner of any identity.
func ObservedBy(node *corev1.Node, o identity.Owner) (obs *Observed, ok bool, err error) {
	key := o.ObservedAnnotation()
	raw, ok := node.Annotations[key]
	if !ok {
		return nil, false, nil
	}
	if obs, err = decodeObserved(node.Name, key, raw); err != nil {
		return nil, false, err
	}
	return obs, true, nil
}
