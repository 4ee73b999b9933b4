// Package identity names everything a kmmkit Reconciler writes into a
// cluster on behalf of an owner — node labels and annotations, worker Pod
// and build object names and their labels — so that two operators that
// embed kmmkit, and KMM itself, never share one.
//
// A [Domain] is one operator's owner kind: a DNS subdomain the operator
// owns (its label and annotation prefix) and the Kind of its resource. An
// [Owner] is one object of that kind. The zero Domain is KMM's: its keys
// and names are byte for byte those of the KMM operator for a Module, so
// kmmkit and KMM agree on KMM's own Modules.
//
// The scheme, for an owner ns/x (or cluster-scoped x) of kind K in domain D
// (k is K in lower case):
//
//	                      KMM (zero Domain)                 Domain{Name: D, Kind: K}
//	ready label           kmm.node.kubernetes.io/ns.x.ready D/k.ns.x.ready (cluster-scoped: D/k.x.ready)
//	version label         kmm.node.kubernetes.io/ns.x.version.ready         D/k.ns.x.version.ready
//	loaded annotation     loaded.kmmkit.io/ns.x             D/k.ns.x.loaded
//	worker Pod            kmm-worker-<node>-x               k-worker-<node>-x-<hash>
//	worker Pod labels     kmm.node.kubernetes.io/module.name=x, …/worker-action=Load|Unload
//	                                                        D/k.name=x, D/worker-action=Load|Unload
//	build object          x-build-<kernel>[-<attempt>]      k-x-build-<kernel>-<hash>[-<attempt>]
//	build labels          kmm.node.kubernetes.io/module.name, …/resource-type, …/target-kernel
//	                                                        D/k.name, D/resource-type, D/target-kernel
//
// The kind is part of every key of a Domain, so one operator may drive
// several kinds in one domain; namespaces hold no dots, so k.ns.x never
// reads as another owner's key, and a kind is either namespaced or
// cluster-scoped, so k.x never meets k.ns.x. A key's name part longer
// than 63 characters is cut and ends with a hash of the whole identity
// (KMM's keys are kept exactly whenever they fit). An embedder's worker
// Pod and build names always end with a hash of the domain, kind and name
// (and node), so owners of two operators never collide in one namespace
// and node "a-b" with owner "c" never meets node "a" with owner "b-c".
// Label values longer than 63 characters are cut the same way.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// KMM's names.
const (
	// KMMDomain is the label domain of KMM (and of the zero Domain).
	KMMDomain = "kmm.node.kubernetes.io"
	// KMMKind is the kind of KMM's Module.
	KMMKind = "Module"
)

const (
	// kmmObservedPrefix is where kmmkit records what is loaded for KMM's
	// Modules (KMM keeps it in NodeModulesConfig objects).
	kmmObservedPrefix = "loaded.kmmkit.io/"
	// maxNamePart is the limit of a label name part, a label value and,
	// for kmmkit, a worker Pod name.
	maxNamePart = 63
	// maxKind bounds Kind so that names built from it keep room for the
	// node and owner names.
	maxKind = 40
	// maxBuildName keeps a build name, its attempt and the "-build"
	// OpenShift appends for the build's Pod within 253 characters.
	maxBuildName = 230
	// hashLen is the number of hex digits of the hashes in names.
	hashLen = 10
)

var kindRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)

// Domain is the identity of one operator's owner kind. The zero value is
// KMM's Module.
type Domain struct {
	// Name is a DNS subdomain the operator owns, e.g. "nic.acme.io": the
	// prefix of its node labels, annotations and Pod labels. "" (or
	// KMMDomain) is KMM's.
	Name string
	// Kind is the kind of the operator's resource, e.g. "NICDriver".
	// Required with Name; KMM's is "Module".
	Kind string
}

// IsKMM reports whether d is KMM's identity.
func (d Domain) IsKMM() bool { return d.Name == "" || d.Name == KMMDomain }

// Validate reports what makes d unusable, naming the field.
func (d Domain) Validate() error {
	if d.IsKMM() {
		if d.Kind != "" && d.Kind != KMMKind {
			return fmt.Errorf("identity: kind %q needs a domain of its own: %s is KMM's, for its Module", d.Kind, KMMDomain)
		}
		return nil
	}
	var errs []error
	for _, msg := range validation.IsDNS1123Subdomain(d.Name) {
		errs = append(errs, fmt.Errorf("domain %q: %s", d.Name, msg))
	}
	for _, reserved := range []string{"kubernetes.io", "k8s.io"} {
		if d.Name == reserved || strings.HasSuffix(d.Name, "."+reserved) {
			errs = append(errs, fmt.Errorf("domain %q: %s and its subdomains are reserved for Kubernetes (and %s for KMM); use a domain you own", d.Name, reserved, KMMDomain))
		}
	}
	switch {
	case d.Kind == "":
		errs = append(errs, fmt.Errorf("kind is empty: domain %q needs the kind of the owner resource", d.Name))
	case len(d.Kind) > maxKind:
		errs = append(errs, fmt.Errorf("kind %q is longer than %d characters", d.Kind, maxKind))
	case !kindRE.MatchString(d.Kind):
		errs = append(errs, fmt.Errorf("kind %q: must be letters and digits, starting with a letter", d.Kind))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// String names d: "Module (kmm.node.kubernetes.io)", "NICDriver (nic.acme.io)".
func (d Domain) String() string { return d.kind() + " (" + d.prefix() + ")" }

// Owner returns the identity of one object of d: namespace "" for a
// cluster-scoped one.
func (d Domain) Owner(namespace, name string) Owner {
	return Owner{Domain: d, Namespace: namespace, Name: name}
}

func (d Domain) prefix() string {
	if d.IsKMM() {
		return KMMDomain
	}
	return d.Name
}

func (d Domain) kind() string {
	if d.IsKMM() {
		return KMMKind
	}
	return d.Kind
}

// lowerKind is the kind as it appears in keys and names.
func (d Domain) lowerKind() string { return strings.ToLower(d.kind()) }

// Owner is one owner object: a KMM Module, or an embedder's resource.
type Owner struct {
	// Domain is the owner's kind.
	Domain Domain
	// Namespace is the owner's namespace; "" for a cluster-scoped owner.
	Namespace string
	// Name is the owner's name.
	Name string
}

// Validate reports what makes o unusable.
func (o Owner) Validate() error {
	if err := o.Domain.Validate(); err != nil {
		return err
	}
	if o.Name == "" {
		return errors.New("identity: owner name is empty")
	}
	if o.Namespace == "" && o.Domain.IsKMM() {
		return fmt.Errorf("identity: %s has no namespace: KMM's Module is namespaced; a cluster-scoped owner needs a Domain of its own", o.Name)
	}
	return nil
}

// Ref is ns/name, or name for a cluster-scoped owner.
func (o Owner) Ref() string {
	if o.Namespace == "" {
		return o.Name
	}
	return o.Namespace + "/" + o.Name
}

// String names o for people: "Module drivers/nic", "NICDriver nic".
func (o Owner) String() string { return o.Domain.kind() + " " + o.Ref() }

// NodeLabel returns the node label of o with suffix (".ready",
// ".version.ready", ".device-plugin-ready", …).
func (o Owner) NodeLabel(suffix string) string { return o.Domain.prefix() + "/" + o.key(suffix) }

// ReadyLabel is the node label set (value "") while o's module is loaded
// as o asks: KMM's kmm.node.kubernetes.io/<ns>.<name>.ready.
func (o Owner) ReadyLabel() string { return o.NodeLabel(".ready") }

// VersionReadyLabel is the node label that carries the loaded module
// version: KMM's kmm.node.kubernetes.io/<ns>.<name>.version.ready.
func (o Owner) VersionReadyLabel() string { return o.NodeLabel(".version.ready") }

// IsStatusLabel reports whether key is a node label that kmmkit writes
// for some owner of d: its .ready or .version.ready label (ReadyLabel,
// VersionReadyLabel). Watchers use it to tell kmmkit's own writes from
// changes made by others.
func (d Domain) IsStatusLabel(key string) bool {
	if !strings.HasSuffix(key, ".ready") {
		return false
	}
	if d.IsKMM() {
		return strings.HasPrefix(key, KMMDomain+"/")
	}
	return strings.HasPrefix(key, d.Name+"/"+d.lowerKind()+".")
}

// ObservedAnnotation is the node annotation in which the worker-pod loader
// records what is loaded for o.
func (o Owner) ObservedAnnotation() string {
	if o.Domain.IsKMM() {
		return kmmObservedPrefix + o.key("")
	}
	return o.Domain.prefix() + "/" + o.key(".loaded")
}

// key is the name part of o's node keys: <ns>.<name><suffix> for KMM,
// <kind>.<ns>.<name><suffix> (or <kind>.<name><suffix>) otherwise, cut
// with a hash of the whole identity when longer than 63 characters.
func (o Owner) key(suffix string) string {
	if o.Domain.IsKMM() {
		// kmmkit's hash of long KMM keys, kept for nodes labelled before.
		return fit(o.Namespace+"."+o.Name+suffix, suffix, o.Namespace+"/"+o.Name)
	}
	scope := o.Domain.lowerKind()
	if o.Namespace != "" {
		scope += "." + o.Namespace
	}
	return fit(scope+"."+o.Name+suffix, suffix, o.hashInput())
}

func (o Owner) hashInput() string {
	return o.Domain.prefix() + "/" + o.Domain.kind() + "/" + o.Namespace + "/" + o.Name
}

// fit returns s when it fits a label name part; otherwise s cut, a hash of
// in, and suffix.
func fit(s, suffix, in string) string {
	if len(s) <= maxNamePart {
		return s
	}
	h := hash(in)
	keep := maxNamePart - len(suffix) - len(h) - 1
	return trim(s[:keep]) + "-" + h + suffix
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:hashLen]
}

// trim drops trailing characters a label name or DNS name may not end with.
func trim(s string) string { return strings.TrimRight(s, ".-_") }

// LabelValue returns v as a label value: v itself when it fits 63
// characters, else cut and ended with a hash of v.
func LabelValue(v string) string {
	if len(v) <= maxNamePart {
		return v
	}
	h := hash(v)
	return trim(v[:maxNamePart-len(h)-1]) + "-" + h
}

// NameLabel is the key of the Pod and build label that carries the owner
// name: KMM's kmm.node.kubernetes.io/module.name, or D/<kind>.name.
func (o Owner) NameLabel() string { return o.Domain.prefix() + "/" + o.Domain.lowerKind() + ".name" }

// ActionLabel is the key of the worker Pod label that says Load or Unload:
// KMM's kmm.node.kubernetes.io/worker-action, or D/worker-action.
func (o Owner) ActionLabel() string { return o.Domain.prefix() + "/worker-action" }

// ResourceTypeLabel is the key of the build label that says BuildImage or
// SignImage.
func (o Owner) ResourceTypeLabel() string { return o.Domain.prefix() + "/resource-type" }

// TargetKernelLabel is the key of the build label that carries the kernel.
func (o Owner) TargetKernelLabel() string { return o.Domain.prefix() + "/target-kernel" }

// appLabels are the app.kubernetes.io labels of o's Pods and builds.
func (o Owner) appLabels(component string) map[string]string {
	if o.Domain.IsKMM() {
		return map[string]string{"app.kubernetes.io/name": "kmm", "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": "kmm"}
	}
	return map[string]string{"app.kubernetes.io/name": "kmmkit", "app.kubernetes.io/component": component,
		"app.kubernetes.io/part-of": LabelValue(o.Domain.lowerKind())}
}

// WorkerLabels are the labels of o's worker Pod doing action.
func (o Owner) WorkerLabels(action string) map[string]string {
	l := o.appLabels("worker")
	l[o.NameLabel()] = LabelValue(o.Name)
	l[o.ActionLabel()] = action
	return l
}

// WorkerSelector selects o's worker Pods (in the namespace they run in).
func (o Owner) WorkerSelector() string {
	return o.NameLabel() + "=" + LabelValue(o.Name) + "," + o.ActionLabel()
}

// IsWorker reports whether labels are those of a worker Pod of o.
func (o Owner) IsWorker(labels map[string]string) bool {
	_, action := labels[o.ActionLabel()]
	return action && labels[o.NameLabel()] == LabelValue(o.Name)
}

// WorkerPodName returns the name of o's worker Pod on node: KMM's
// kmm-worker-<node>-<name> (cut with a hash beyond 63 characters), or
// <kind>-worker-<node>-<name>-<hash>.
func (o Owner) WorkerPodName(node string) string {
	if o.Domain.IsKMM() {
		name := "kmm-worker-" + node + "-" + o.Name
		if len(name) <= maxNamePart {
			return name
		}
		// kmmkit's cut of long KMM names, kept for Pods created before.
		sum := sha256.Sum256([]byte(name))
		suffix := hex.EncodeToString(sum[:4])
		return trim(name[:maxNamePart-len(suffix)-1]) + "-" + suffix
	}
	h := hash(o.hashInput() + "/" + node)
	base := o.Domain.lowerKind() + "-worker-" + node + "-" + o.Name
	if len(base) > maxNamePart-hashLen-1 {
		base = trim(base[:maxNamePart-hashLen-1])
	}
	return base + "-" + h
}

// BuildName returns the name of attempt (from 1) of o's build for a
// kernel given as a DNS label (kernelmap.Kernel.DNSName): KMM's
// <name>-build-<kernel>, or <kind>-<name>-build-<kernel>-<hash>, with
// -<attempt> from the second attempt on; a name longer than 230
// characters is cut and ends with a hash.
func (o Owner) BuildName(kernel string, attempt int) string {
	n := o.Name + "-build-" + kernel
	if !o.Domain.IsKMM() {
		n = o.Domain.lowerKind() + "-" + n + "-" + hash(o.Domain.prefix()+"/"+o.Domain.kind()+"/"+o.Name)
	}
	if len(n) > maxBuildName {
		n = trim(n[:maxBuildName-hashLen-1]) + "-" + hash(n)
	}
	if attempt > 1 {
		n += fmt.Sprintf("-%d", attempt)
	}
	return n
}

// BuildSelector returns the labels that find o's builds of resourceType
// (BuildImage, SignImage) for a kernel given as a DNS label.
func (o Owner) BuildSelector(resourceType, kernel string) map[string]string {
	return map[string]string{
		o.NameLabel():         LabelValue(o.Name),
		o.ResourceTypeLabel(): resourceType,
		o.TargetKernelLabel(): kernel,
	}
}

// BuildLabels returns the labels of o's build objects: BuildSelector and
// the app.kubernetes.io labels.
func (o Owner) BuildLabels(resourceType, kernel string) map[string]string {
	l := o.appLabels(resourceType)
	for k, v := range o.BuildSelector(resourceType, kernel) {
		l[k] = v
	}
	return l
}

// EventAnnotations are the annotations of o's node events: KMM's
// module: <ns>/<name>, plus the kind and domain for an embedder.
func (o Owner) EventAnnotations() map[string]string {
	a := map[string]string{"module": o.Ref()}
	if !o.Domain.IsKMM() {
		a["kind"], a["domain"] = o.Domain.Kind, o.Domain.prefix()
	}
	return a
}
