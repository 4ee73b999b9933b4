package kmm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/ctxlog"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/upgrade"
)

// Finalizer holds a Module until every node has unloaded it (KMM's key).
const Finalizer = "kmm.node.kubernetes.io/module-finalizer"

// ImageSigner signs the modules of an image; builder/sign.Signer is the
// default.
type ImageSigner interface {
	Sign(ctx context.Context, req sign.Request) (sign.Result, error)
}

// NodeLister lists the cluster's nodes (an informer's lister, say).
type NodeLister func(ctx context.Context) ([]*corev1.Node, error)

// Reconciler drives Modules: kernel mapping, image checks, builds,
// signing and loading on nodes, with status, events and metrics. Build it
// with NewReconciler; every piece is an interface with a real default or
// a fake (see kmm/kmmtest). It is safe for concurrent use on different
// Modules.
type Reconciler struct {
	client kubernetes.Interface
	options

	mu sync.Mutex
	// serverVersion is the API server's version, read at serverVersionAt.
	serverVersion   string
	serverVersionAt time.Time
	signFailed      map[string]failure    // image → last sign failure
	verified        map[string]time.Time  // image → last registry verification
	linted          map[string]lintResult // digest and kernel → lint (WithImageLint)
}

// failure is a remembered failure, for backoff.
type failure struct {
	at     time.Time
	msg    string
	reason reason.Reason
}

// options are what the Options record; NewReconciler fills in the
// pieces they leave out.
type options struct {
	modules       ModuleClient
	mapper        *kernelmap.Mapper
	checker       registry.ImageChecker
	registry      *registry.Client
	builder       builder.Builder
	signer        ImageSigner
	loader        loader.NodeLoader
	recorder      record.EventRecorder
	log           ctxlog.Logger
	metrics       *Metrics
	clock         clock.PassiveClock
	clockSet      bool
	workerPods    *workerPods
	verifyEvery   time.Duration
	signBackoff   time.Duration
	unloadOnTaint bool
	nodes         NodeLister
	dtk           builder.DTKResolver
	identity      identity.Domain
	imageLint     *imageLint
	rolling       *upgrade.Policy
}

// Option configures a Reconciler (see NewReconciler). Options only
// record a value; NewReconciler checks them and builds what they name.
type Option func(*options)

// workerPods is what WithWorkerPods asks for.
type workerPods struct {
	image string
	opts  []loader.Option
}

// WithModuleClient lets Reconcile write Module finalizers and status
// (NewModuleClient over a dynamic client). ReconcileSpec does not need it.
func WithModuleClient(c ModuleClient) Option { return func(o *options) { o.modules = c } }

// WithMapper sets the kernel mapper (default kernelmap.New()).
func WithMapper(m *kernelmap.Mapper) Option { return func(o *options) { o.mapper = m } }

// WithRegistry sets the registry client used for checks, and for the
// default signer.
func WithRegistry(c *registry.Client) Option { return func(o *options) { o.registry = c } }

// WithImageChecker replaces the image checker (registry/fake.Checker in
// tests); it takes precedence over WithRegistry for checks.
func WithImageChecker(c registry.ImageChecker) Option { return func(o *options) { o.checker = c } }

// WithBuilder sets the builder for Modules with a build; without one, a
// missing image with a build is reported as such.
func WithBuilder(b builder.Builder) Option { return func(o *options) { o.builder = b } }

// WithSigner replaces the image signer.
func WithSigner(s ImageSigner) Option { return func(o *options) { o.signer = s } }

// WithNodeLoader sets how modules are loaded on nodes: a PodLoader built
// by hand, another loader.NodeLoader, or loader/fake.NodeLoader in tests.
// One of WithNodeLoader and WithWorkerPods is required; of the two, the
// last one given wins.
func WithNodeLoader(l loader.NodeLoader) Option {
	return func(o *options) { o.loader, o.workerPods = l, nil }
}

// WithWorkerPods loads modules with worker Pods running workerImage (the
// image `kmm image worker REF` pushes): NewReconciler builds the
// loader.PodLoader itself, with the Reconciler's clientset and, when they
// are given, its logger (WithLogger), clock (WithClock) and event recorder
// (WithEventRecorder), then opts (loader.WithFirmwareHostPath,
// loader.WithPodLister, loader.WithCABundleConfigMap, …), which win. It
// is the common way to load; WithNodeLoader takes a loader of your own
// instead (one of the two is required; the last one given wins).
// NewReconciler reports what the PodLoader refuses.
func WithWorkerPods(workerImage string, opts ...loader.Option) Option {
	return func(o *options) { o.loader, o.workerPods = nil, &workerPods{image: workerImage, opts: opts} }
}

// WithEventRecorder emits events on Modules, and, through a PodLoader
// built by WithWorkerPods, ModuleLoaded and ModuleUnloaded events on
// nodes.
func WithEventRecorder(rec record.EventRecorder) Option {
	return func(o *options) { o.recorder = rec }
}

// WithLogger sets the logger of every pass, and of what NewReconciler
// builds: the kernel mapper, the registry client and the signer it makes
// when none is given, and the PodLoader of WithWorkerPods. Without it,
// each pass logs to the logger of its context (logr.FromContextOrDiscard),
// as controller-runtime provides, and so do those pieces, since a pass
// passes its logger, with the owner's namespace and name, down in its
// context (logr.NewContext); pieces you build and pass in use their own
// WithLogger if you gave them one, else that context's. Decisions
// (mapping, image checks, builds, signing, loading) are logged at V(1)
// with the keys namespace, name, kernel, image and node counts.
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// WithMetrics records metrics (see NewMetrics).
func WithMetrics(m *Metrics) Option { return func(o *options) { o.metrics = m } }

// WithClock sets the clock conditions, backoffs and re-verification are
// timed with (default the real one); the registry client NewReconciler
// makes and the PodLoader of WithWorkerPods get it too.
func WithClock(c clock.PassiveClock) Option {
	return func(o *options) { o.clock, o.clockSet = c, true }
}

// WithVerifyInterval sets how often existing images are verified again
// in the registry (default 10 minutes): a wiped registry is noticed and
// the image rebuilt, without KMM's manual imageRebuildTriggerGeneration.
// NewReconciler refuses d <= 0.
func WithVerifyInterval(d time.Duration) Option { return func(o *options) { o.verifyEvery = d } }

// WithUnloadOnTaint restores KMM's behaviour of unloading a module from a
// node that becomes unschedulable for it (cordoned, tainted). By default
// a node that has the module keeps it while it matches the selector.
func WithUnloadOnTaint(on bool) Option { return func(o *options) { o.unloadOnTaint = on } }

// WithNodeLister replaces listing nodes through the clientset.
func WithNodeLister(l NodeLister) Option { return func(o *options) { o.nodes = l } }

// WithIdentity names the owners this Reconciler drives: their kind and a
// label domain the operator owns (see package identity), from which the
// node labels and annotation, worker Pod and build names and their labels
// are made. Two operators with their own identities, and KMM, never share
// a label, an annotation, a worker Pod or a build, even for owners of the
// same name in one namespace. The default is KMM's Module, byte for byte
// KMM's keys and names: keep it for Reconcile (KMM's Module); an operator
// that drives its own resource with ReconcileSpec gives its own, e.g.
// identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}. An identity with
// its own domain also allows cluster-scoped owners (Object.PodNamespace).
// Changing the identity of a running operator leaves what the old one
// wrote on the nodes.
func WithIdentity(d identity.Domain) Option { return func(o *options) { o.identity = d } }

// WithDTKResolver resolves DTK_AUTO for Dockerfiles that use it.
func WithDTKResolver(d builder.DTKResolver) Option { return func(o *options) { o.dtk = d } }

// NewReconciler returns a Reconciler that reads and writes through
// client. It needs a node loader (WithWorkerPods or WithNodeLoader) and
// fails, naming the option, on one it cannot use; what it builds itself
// (the PodLoader of WithWorkerPods, a kernel mapper, a registry client
// and a signer when none is given) gets its logger and clock, so they
// are given once.
func NewReconciler(client kubernetes.Interface, opts ...Option) (*Reconciler, error) {
	if client == nil {
		return nil, errors.New("kmm: NewReconciler needs a clientset")
	}
	r := &Reconciler{client: client, signFailed: map[string]failure{}, linted: map[string]lintResult{},
		options: options{clock: clock.RealClock{}, verifyEvery: 10 * time.Minute, signBackoff: time.Minute}}
	for _, f := range opts {
		f(&r.options)
	}
	if r.clock == nil {
		return nil, errors.New("kmm: WithClock(nil): no clock")
	}
	if r.verifyEvery <= 0 {
		return nil, fmt.Errorf("kmm: WithVerifyInterval(%v): the interval must be positive", r.verifyEvery)
	}
	switch {
	case r.workerPods != nil:
		pl, err := loader.NewPodLoader(client, r.workerPods.image, append(r.podLoaderOptions(), r.workerPods.opts...)...)
		if err != nil {
			return nil, fmt.Errorf("kmm: WithWorkerPods: %w", err)
		}
		r.loader = pl
	case r.loader == nil:
		return nil, errors.New("kmm: no node loader: pass WithWorkerPods(workerImage) (worker Pods), or WithNodeLoader(...) with a loader of your own or a fake")
	}
	if err := r.identity.Validate(); err != nil {
		return nil, fmt.Errorf("kmm: WithIdentity: %w", err)
	}
	if r.rolling != nil {
		if err := r.rolling.Validate(); err != nil {
			return nil, fmt.Errorf("kmm: WithRollingUpgrade: %w", err)
		}
	}
	log, logSet := r.log.Get()
	if r.mapper == nil {
		var mo []kernelmap.Option
		if logSet {
			mo = append(mo, kernelmap.WithLogger(log))
		}
		m, err := kernelmap.New(mo...)
		if err != nil {
			return nil, err
		}
		r.mapper = m
	}
	if r.registry == nil && (r.checker == nil || r.signer == nil) {
		var ro []registry.Option
		if logSet {
			ro = append(ro, registry.WithLogger(log))
		}
		if r.clockSet {
			ro = append(ro, registry.WithClock(r.clock))
		}
		c, err := registry.NewClient(ro...)
		if err != nil {
			return nil, err
		}
		r.registry = c
	}
	if r.checker == nil {
		r.checker = r.registry
	}
	if r.signer == nil {
		var so []sign.Option
		if logSet {
			so = append(so, sign.WithLogger(log))
		}
		s, err := sign.New(r.registry, so...)
		if err != nil {
			return nil, err
		}
		r.signer = s
	}
	if r.nodes == nil {
		r.nodes = func(ctx context.Context) ([]*corev1.Node, error) {
			l, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("listing nodes: %w", err)
			}
			out := make([]*corev1.Node, len(l.Items))
			for i := range l.Items {
				out[i] = &l.Items[i]
			}
			return out, nil
		}
	}
	return r, nil
}

// podLoaderOptions are the Reconciler's logger, clock and event recorder,
// for the PodLoader of WithWorkerPods: those that were given.
func (r *Reconciler) podLoaderOptions() []loader.Option {
	var opts []loader.Option
	if log, ok := r.log.Get(); ok {
		opts = append(opts, loader.WithLogger(log))
	}
	if r.clockSet {
		opts = append(opts, loader.WithClock(r.clock))
	}
	if r.recorder != nil {
		opts = append(opts, loader.WithEventRecorder(r.recorder))
	}
	return opts
}

// now reads the Reconciler's clock.
func (r *Reconciler) now() time.Time { return r.clock.Now() }

// Object is what ReconcileSpec works on: a Module, or a ModuleSpec that
// an operator embeds in its own resource.
type Object struct {
	// Namespace and Name identify it, with the Reconciler's identity
	// (WithIdentity); builds and worker Pods live in Namespace and are
	// named after Name. Namespace is "" for a cluster-scoped owner, which
	// needs an identity of its own and a PodNamespace.
	Namespace, Name string
	// PodNamespace is where the worker and build Pods of a cluster-scoped
	// owner run, and where its imageRepoSecret, build and sign secrets and
	// Dockerfile ConfigMaps are read; it is also its MOD_NAMESPACE. Leave
	// it empty for a namespaced owner, whose Pods run in Namespace (an
	// owner reference cannot cross namespaces; one to a cluster-scoped
	// owner from a namespaced Pod is allowed).
	PodNamespace string
	// Spec is the desired state.
	Spec v1beta1.ModuleSpec
	// Status is the status written last (for events on changes and the
	// rebuild trigger).
	Status v1beta1.ModuleStatus
	// Generation is the object's metadata.generation, for conditions.
	Generation int64
	// Deleting is set when the object is being deleted: every node
	// unloads, and Result.Done says when the finalizer may go.
	Deleting bool
	// NamespaceTerminating is set when Namespace itself is being deleted.
	NamespaceTerminating bool
	// Owner owns build objects and worker Pods.
	Owner *metav1.OwnerReference
	// Ref is where events go; nil means no events.
	Ref *corev1.ObjectReference
	// SpecPath is where Spec sits in the caller's resource, for the
	// field paths of validation errors (field.NewPath("spec", "module")
	// for a ModuleSpec embedded at spec.module). nil means "spec".
	SpecPath *field.Path
}

// podNamespace is where the Object's Pods run and its secrets are read.
func (o Object) podNamespace() string {
	if o.PodNamespace != "" {
		return o.PodNamespace
	}
	return o.Namespace
}

// checkObject reports what makes obj unusable with r's identity.
func (r *Reconciler) checkObject(obj Object) error {
	if obj.Name == "" {
		return errors.New("kmm: ReconcileSpec needs a name")
	}
	o := r.identity.Owner(obj.Namespace, obj.Name)
	if err := o.Validate(); err != nil {
		return fmt.Errorf("kmm: ReconcileSpec: %w", err)
	}
	switch {
	case obj.Namespace == "" && obj.PodNamespace == "":
		return fmt.Errorf("kmm: ReconcileSpec: cluster-scoped %s needs Object.PodNamespace, the namespace its worker and build Pods run in", o)
	case obj.Namespace != "" && obj.PodNamespace != "" && obj.PodNamespace != obj.Namespace:
		return fmt.Errorf("kmm: ReconcileSpec: Object.PodNamespace %q of %s differs from its namespace: a namespaced owner's Pods run in its own namespace",
			obj.PodNamespace, o)
	}
	return nil
}

// syncRequest is the loader request for obj on nodes, with what is desired
// and kept left to the caller.
func (r *Reconciler) syncRequest(obj Object, nodes []*corev1.Node) loader.SyncRequest {
	return loader.SyncRequest{Namespace: obj.Namespace, Module: obj.Name, Identity: r.identity, PodNamespace: obj.PodNamespace,
		Nodes: nodes, Owner: obj.Owner}
}

// specPath returns SpecPath or its default.
func (o Object) specPath() *field.Path {
	if o.SpecPath == nil {
		return field.NewPath("spec")
	}
	return o.SpecPath
}

// Result is what a pass decided. It is meaningful, and its Status safe to
// write, also when the pass returns an error (see ReconcileSpec).
type Result struct {
	// Status is the new status, to be written when it differs.
	Status v1beta1.ModuleStatus
	// RequeueAfter asks for another pass then (0: wait for a change).
	RequeueAfter time.Duration
	// Done is set on a deleting object once every node has unloaded (or
	// unloading is impossible): the finalizer may go.
	Done bool
}

func (res *Result) requeue(d time.Duration) {
	if d > 0 && (res.RequeueAfter == 0 || d < res.RequeueAfter) {
		res.RequeueAfter = d
	}
}
