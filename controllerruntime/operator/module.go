package operator

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kmmkit/kmmkit/controllerruntime/watch"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// SetupModule adds to mgr a controller for KMM's Module
// (kmm.sigs.x-k8s.io/v1beta1), with KMM's identity, so that its node
// labels, worker Pods and builds are KMM's own. Each pass is
// kmm.Reconciler.Reconcile: it holds the Module with kmm.Finalizer,
// writes its status and events, unloads it everywhere when it is
// deleted, and asks to be requeued when it waits for something. It
// watches the Modules, the nodes (watch.NodeHandler) and KMM-labelled
// Pods (watch.PodHandler).
//
// mgr's scheme must know v1beta1 (v1beta1.AddToScheme) and the Module CRD
// (v1beta1.CRD) must be installed.
func SetupModule(mgr ctrl.Manager, o Options) error {
	if _, err := mgr.GetScheme().New(v1beta1.SchemeGroupVersion.WithKind(v1beta1.Kind)); err != nil {
		return fmt.Errorf("operator: the manager's scheme does not know %s: add v1beta1.AddToScheme: %w", v1beta1.SchemeGroupVersion.WithKind(v1beta1.Kind), err)
	}
	name := o.Name
	if name == "" {
		name = "kmm-module"
	}
	p, err := o.build(mgr, identity.Domain{}, name, kmm.WithModuleClient(NewModuleClient(mgr.GetClient(), mgr.GetAPIReader())))
	if err != nil {
		return fmt.Errorf("operator: %w", err)
	}
	c := &moduleController{client: mgr.GetClient(), kmm: p.kmm}
	return ctrl.NewControllerManagedBy(mgr).Named(name).
		For(&v1beta1.Module{}).
		Watches(&corev1.Node{}, watch.NodeHandler(watch.Modules(mgr.GetCache()), identity.Domain{}),
			builder.WithPredicates(watch.NodePredicate())).
		Watches(&corev1.Pod{}, watch.PodHandler(identity.Domain{}, false)).
		Watches(&appsv1.DaemonSet{}, watch.PodHandler(identity.Domain{}, false)).
		WithOptions(controller.Options{MaxConcurrentReconciles: o.MaxConcurrentReconciles}).
		Complete(c)
}

type moduleController struct {
	client client.Reader
	kmm    *kmm.Reconciler
}

// Reconcile implements reconcile.Reconciler.
func (c *moduleController) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var m v1beta1.Module
	if err := c.client.Get(ctx, req.NamespacedName, &m); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	res, err := c.kmm.Reconcile(ctx, &m)
	return reconcile.Result{RequeueAfter: res.RequeueAfter}, err
}

// NewModuleClient returns a kmm.ModuleClient over controller-runtime: it
// lists Modules with c (the manager's cache), writes through c, and gets
// a Module from fresh (the manager's API reader), which
// kmm.Reconciler.Reconcile does only after a conflict, to write the status
// on the latest object.
func NewModuleClient(c client.Client, fresh client.Reader) kmm.ModuleClient {
	return moduleClient{c: c, fresh: fresh}
}

type moduleClient struct {
	c     client.Client
	fresh client.Reader
}

func (m moduleClient) Get(ctx context.Context, namespace, name string) (*v1beta1.Module, error) {
	var out v1beta1.Module
	if err := m.fresh.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (m moduleClient) List(ctx context.Context, namespace string) ([]v1beta1.Module, error) {
	var out v1beta1.ModuleList
	if err := m.c.List(ctx, &out, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	return out.Items, nil
}

func (m moduleClient) Create(ctx context.Context, mod *v1beta1.Module) (*v1beta1.Module, error) {
	mod = mod.DeepCopy()
	if err := m.c.Create(ctx, mod); err != nil {
		return nil, err
	}
	return mod, nil
}

func (m moduleClient) Update(ctx context.Context, mod *v1beta1.Module) (*v1beta1.Module, error) {
	mod = mod.DeepCopy()
	if err := m.c.Update(ctx, mod); err != nil {
		return nil, err
	}
	return mod, nil
}

func (m moduleClient) UpdateStatus(ctx context.Context, mod *v1beta1.Module) (*v1beta1.Module, error) {
	mod = mod.DeepCopy()
	if err := m.c.Status().Update(ctx, mod); err != nil {
		return nil, err
	}
	return mod, nil
}
