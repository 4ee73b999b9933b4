// Package operator wires kmmkit into a controller-runtime manager: one
// call sets up a controller for KMM's own Module (SetupModule), or for an
// operator's resource that embeds a ModuleSpec (SetupEmbedded), with the
// finalizer, the status, events, requeues, the owner and event
// references, and the watches of package watch on nodes and on kmmkit's
// Pods, read from the manager's cache (package cached).
//
//	scheme := runtime.NewScheme()
//	_ = clientgoscheme.AddToScheme(scheme)
//	_ = v1beta1.AddToScheme(scheme)
//	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme,
//		Cache: cache.Options{ByObject: cached.ByObject(identity.Domain{})}})
//	if err != nil {
//		return err
//	}
//	if err := operator.SetupModule(mgr, operator.Options{WorkerImage: workerImage}); err != nil {
//		return err
//	}
//	return mgr.Start(ctx)
//
// The Role the controllers need is in the kubebuilder:rbac markers of
// this package (kmmkit's own needs) and of the drop-in operator
// (cmd/kmm-operator: KMM's Module); config/rbac/role.yaml is generated from
// them. Worker Pods add SYS_MODULE (and run privileged when the Module
// copies firmware) with host paths, so the namespaces they run in need
// the Pod Security level privileged.
package operator

import (
	"errors"
	"fmt"

	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/controllerruntime/cached"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

// Options configure the controllers that SetupModule and SetupEmbedded
// add to a manager. Only WorkerImage is required.
type Options struct {
	// WorkerImage is the image of worker Pods: it holds kmmkit's static
	// worker binary at /kmm (loader.WithWorkerBinary in PodLoaderOptions
	// to change that); `kmm image worker REF` builds and pushes one.
	// Required.
	WorkerImage string
	// Clientset is what kmmkit writes through; nil means one made from
	// the manager's rest config.
	Clientset kubernetes.Interface
	// Registry checks, pulls and pushes images; nil means
	// registry.NewClient with the manager's logger.
	Registry *registry.Client
	// Builder builds missing images (kaniko.New(clientset, …), say). Nil
	// means none: a Module whose image is missing and has a build is
	// reported with reason NoBuilder.
	Builder builder.Builder
	// Metrics, when set, records kmmkit's metrics (kmm.NewMetrics on the
	// manager's registry, sigs.k8s.io/controller-runtime/pkg/metrics).
	Metrics *kmm.Metrics
	// CachedReads serves kmmkit's reads of Secrets, ConfigMaps and
	// Namespaces from the manager's cache (cached.Clientset) instead of
	// one get each from the API server; the role then needs list and
	// watch on them.
	CachedReads bool
	// Name names the controller and the source of its events; "" means
	// "kmm-module" for SetupModule and the kind in lower case for
	// SetupEmbedded.
	Name string
	// MaxConcurrentReconciles is how many owners are reconciled at once;
	// 0 means controller-runtime's default (1).
	MaxConcurrentReconciles int
	// ReconcilerOptions are applied after the ones these options make,
	// so they win (kmm.WithNodeLoader replaces the worker Pods of
	// kmm.WithWorkerPods, say).
	ReconcilerOptions []kmm.Option
	// PodLoaderOptions configure the worker Pods and their PodLoader
	// (loader.WithFirmwareHostPath, loader.WithResources,
	// loader.WithCABundleConfigMap, …); they are applied after the
	// manager's Pod lister, so they win.
	PodLoaderOptions []loader.Option
}

// parts are what a controller is made of.
type parts struct {
	kmm       *kmm.Reconciler
	clientset kubernetes.Interface
}

// build makes the Reconciler, whose PodLoader (kmm.WithWorkerPods) reads
// worker Pods from the manager's cache and gets the Reconciler's event
// recorder, for owners of id; extra options go before the user's.
func (o Options) build(mgr ctrl.Manager, id identity.Domain, name string, extra ...kmm.Option) (parts, error) {
	if o.WorkerImage == "" {
		return parts{}, errors.New("Options.WorkerImage is empty: name the image that holds the kmm binary the worker Pods run")
	}
	cs := o.Clientset
	if cs == nil {
		var err error
		if cs, err = kubernetes.NewForConfig(mgr.GetConfig()); err != nil {
			return parts{}, fmt.Errorf("clientset: %w", err)
		}
	}
	if o.CachedReads {
		cs = cached.Clientset(cs, mgr.GetCache())
	}
	log := mgr.GetLogger().WithName(name)
	rec := mgr.GetEventRecorderFor(name)
	podOpts := append([]loader.Option{loader.WithPodLister(cached.Pods(mgr.GetCache()))}, o.PodLoaderOptions...)
	var err error
	reg := o.Registry
	if reg == nil {
		if reg, err = registry.NewClient(registry.WithLogger(log.WithName("registry"))); err != nil {
			return parts{}, err
		}
	}
	opts := []kmm.Option{kmm.WithIdentity(id), kmm.WithRegistry(reg), kmm.WithWorkerPods(o.WorkerImage, podOpts...),
		kmm.WithEventRecorder(rec), kmm.WithNodeLister(cached.Nodes(mgr.GetCache()))}
	if o.Builder != nil {
		opts = append(opts, kmm.WithBuilder(o.Builder))
	}
	if o.Metrics != nil {
		opts = append(opts, kmm.WithMetrics(o.Metrics))
	}
	opts = append(append(opts, extra...), o.ReconcilerOptions...)
	r, err := kmm.NewReconciler(cs, opts...)
	if err != nil {
		return parts{}, err
	}
	return parts{kmm: r, clientset: cs}, nil
}
