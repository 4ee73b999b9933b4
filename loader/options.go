package loader

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/kmmkit/kmmkit/internal/ctxlog"
)

// Option configures a PodLoader (NewPodLoader) and the worker Pods it
// runs (WorkerPod takes the same options and uses those that shape the
// Pod). Options only record a value; NewPodLoader and WorkerPod check
// them and report the first one that is wrong.
type Option func(*options)

// options are what the Options record.
type options struct {
	pod        podOptions
	recorder   record.EventRecorder
	log        ctxlog.Logger
	clock      clock.PassiveClock
	stuckAfter time.Duration
	pods       PodLister
	maxWorkers int
}

// podOptions are the operator-wide settings of worker Pods.
type podOptions struct {
	binary           string
	firmwareHostPath string
	resources        *corev1.ResourceRequirements
	runAsUser        *int64
	seLinuxType      string
	caBundles        []caBundle // more than one is refused
}

// caBundle is a ConfigMap or Secret key holding PEM CA certificates.
type caBundle struct {
	kind, name, key string // kind: "ConfigMap" or "Secret"
}

// DefaultCABundleKey is the key of a CA bundle ConfigMap or Secret
// unless WithCABundleConfigMap or WithCABundleSecret names another: the
// key of the ConfigMap that OpenShift and trust-manager fill with a
// cluster's trusted CAs.
const DefaultCABundleKey = "ca-bundle.crt"

// WorkerCADir is where a worker Pod mounts the CA bundle of
// WithCABundleConfigMap or WithCABundleSecret; the worker reads
// WorkerCADir/ca-bundle.crt (its --ca-file).
const WorkerCADir = "/etc/kmmkit/registry-ca"

// WithWorkerBinary sets the path of the worker binary in the worker image
// (default /kmm, where `kmm image worker` puts it).
func WithWorkerBinary(p string) Option { return func(o *options) { o.pod.binary = p } }

// WithFirmwareHostPath sets the host directory firmware is copied to
// (default /lib/firmware; use /var/lib/firmware where /lib is
// read-only, as KMM's worker.firmwareHostPath).
func WithFirmwareHostPath(dir string) Option {
	return func(o *options) { o.pod.firmwareHostPath = dir }
}

// WithResources sets the worker container's resources (default: requests
// of 100m CPU and 64Mi memory, a limit of 256Mi memory).
func WithResources(r corev1.ResourceRequirements) Option {
	return func(o *options) { o.pod.resources = r.DeepCopy() }
}

// WithRunAsUser sets the worker's user ID (default 0, root, as KMM's
// worker.runAsUser).
func WithRunAsUser(uid int64) Option { return func(o *options) { o.pod.runAsUser = &uid } }

// WithSELinuxType sets the SELinux type of a worker that is not
// privileged (default DefaultSELinuxType, as KMM's worker.seLinuxType):
// an SELinux node does not let a container_t process load modules.
func WithSELinuxType(t string) Option { return func(o *options) { o.pod.seLinuxType = t } }

// WithCABundleConfigMap makes worker Pods trust, besides the worker
// binary's built-in roots, the PEM CA certificates in key of the
// ConfigMap name (key "" means DefaultCABundleKey), for registries with a
// private CA. The ConfigMap must exist in every namespace worker Pods run
// in (the owner's, or a cluster-scoped owner's PodNamespace): the Pod
// mounts it at WorkerCADir and passes it as --ca-file, which takes the
// place of a bundle built into the worker image (`kmm image worker
// --ca-bundle`). The kubelet does not start a worker whose ConfigMap or
// key is missing. Give one of WithCABundleConfigMap and
// WithCABundleSecret.
func WithCABundleConfigMap(name, key string) Option {
	return func(o *options) { o.pod.caBundles = append(o.pod.caBundles, caBundle{"ConfigMap", name, key}) }
}

// WithCABundleSecret is WithCABundleConfigMap for a Secret.
func WithCABundleSecret(name, key string) Option {
	return func(o *options) { o.pod.caBundles = append(o.pod.caBundles, caBundle{"Secret", name, key}) }
}

// WithEventRecorder emits ModuleLoaded and ModuleUnloaded events on
// nodes. Without it, no events are emitted.
func WithEventRecorder(r record.EventRecorder) Option {
	return func(o *options) { o.recorder = r }
}

// WithLogger makes the PodLoader log to l. Without it, each Sync logs to
// the logger of its context (logr.FromContextOrDiscard), which the
// Reconciler fills with the owner's keys.
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// WithClock sets the clock that stuck workers, retries and the loader's
// memory of its writes are timed with (default the real one).
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithStuckTimeout sets how long a worker Pod may run or stay pending
// before it is reported as stuck (default 5 minutes; 0 disables).
// NewPodLoader refuses a negative timeout.
func WithStuckTimeout(d time.Duration) Option { return func(o *options) { o.stuckAfter = d } }

// WithPodLister replaces listing worker Pods through the client on every
// pass, with an informer's lister for instance (watch the Pods with the
// label identity.Owner.ActionLabel, loader.LabelWorkerAction for KMM's).
func WithPodLister(p PodLister) Option { return func(o *options) { o.pods = p } }

// DefaultMaxWorkers is how many worker Pods of one owner exist at once
// unless WithMaxWorkers says otherwise.
const DefaultMaxWorkers = 500

// WithMaxWorkers sets how many worker Pods of one owner exist at once
// (default DefaultMaxWorkers; 0 means no limit, as KMM, which starts a
// worker on every node at once). A node beyond the limit waits, Loading
// (or Unloading) with a message saying so, and gets its worker in a later
// pass, as running workers finish: a rollout to thousands of nodes is
// paced, so no single pass creates thousands of Pods (blocking on the
// client's rate limit while finished workers wait to be harvested), the
// registry is not hit by every node at once, and the Pods the loader and
// its informers hold stay bounded. NewPodLoader refuses a negative
// number.
func WithMaxWorkers(n int) Option { return func(o *options) { o.maxWorkers = n } }

// newOptions applies opts to the defaults and checks the result.
func newOptions(workerImage string, opts []Option) (options, error) {
	o := options{clock: clock.RealClock{}, stuckAfter: 5 * time.Minute, maxWorkers: DefaultMaxWorkers}
	for _, f := range opts {
		f(&o)
	}
	if err := o.pod.check(workerImage); err != nil {
		return options{}, err
	}
	switch {
	case o.clock == nil:
		return options{}, errors.New("pod loader: WithClock(nil): no clock")
	case o.stuckAfter < 0:
		return options{}, fmt.Errorf("pod loader: WithStuckTimeout(%v): the timeout must not be negative (0 disables it)", o.stuckAfter)
	case o.maxWorkers < 0:
		return options{}, fmt.Errorf("pod loader: WithMaxWorkers(%d): the number must not be negative (0 means no limit)", o.maxWorkers)
	}
	return o, nil
}

// check reports the first setting of worker Pods that is wrong.
func (p *podOptions) check(workerImage string) error {
	switch {
	case strings.TrimSpace(workerImage) == "":
		return errors.New("pod loader: no worker image: name the image that holds the worker binary (kmm image worker REF builds one)")
	case p.binary != "" && !path.IsAbs(p.binary):
		return fmt.Errorf("pod loader: WithWorkerBinary(%q): the path must be absolute", p.binary)
	case p.runAsUser != nil && *p.runAsUser < 0:
		return fmt.Errorf("pod loader: WithRunAsUser(%d): a user ID is not negative", *p.runAsUser)
	case len(p.caBundles) > 1:
		return errors.New("pod loader: WithCABundleConfigMap and WithCABundleSecret: give one CA bundle")
	}
	for i := range p.caBundles {
		b := &p.caBundles[i]
		if b.key == "" {
			b.key = DefaultCABundleKey
		}
		if msgs := validation.IsDNS1123Subdomain(b.name); len(msgs) > 0 {
			return fmt.Errorf("pod loader: WithCABundle%s(%q, %q): the name is not a valid %s name: %s", b.kind, b.name, b.key, b.kind, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsConfigMapKey(b.key); len(msgs) > 0 {
			return fmt.Errorf("pod loader: WithCABundle%s(%q, %q): the key is not a valid key: %s", b.kind, b.name, b.key, strings.Join(msgs, "; "))
		}
	}
	return nil
}
