// Command controller-runtime is an operator whose own CRD, NICDriver,
// embeds KMM's ModuleSpec; a controller-runtime reconciler hands it to
// kmm.Reconciler.ReconcileSpec, owns the worker Pods and watches nodes.
//
//	cd examples/controller-runtime && go run . --worker-image quay.io/kmmkit/kmm:latest
//
// It uses the kubeconfig controller-runtime finds (--kubeconfig,
// KUBECONFIG, in-cluster). Install config/example.kmmkit.io_nicdrivers.yaml
// first.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kmmkit/kmmkit/examples/controller-runtime/api"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

// finalizer holds a NICDriver until its module is unloaded everywhere.
const finalizer = "example.kmmkit.io/unload"

// NICDriverReconciler reconciles NICDrivers with kmmkit.
type NICDriverReconciler struct {
	client.Client
	KMM *kmm.Reconciler
}

// Reconcile implements reconcile.Reconciler.
func (r *NICDriverReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var d api.NICDriver
	if err := r.Get(ctx, req.NamespacedName, &d); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	deleting := !d.DeletionTimestamp.IsZero()
	if deleting && !controllerutil.ContainsFinalizer(&d, finalizer) {
		return ctrl.Result{}, nil
	}
	if !deleting && controllerutil.AddFinalizer(&d, finalizer) {
		if err := r.Update(ctx, &d); err != nil {
			return ctrl.Result{}, err
		}
	}
	gvk := api.GroupVersion.WithKind("NICDriver")
	res, err := r.KMM.ReconcileSpec(ctx, kmm.Object{
		Namespace: d.Namespace, Name: d.Name, Spec: d.Spec.Module, Status: d.Status.Module,
		Generation: d.Generation, Deleting: deleting,
		// Controller owner: controller-runtime's Owns() maps worker Pods back.
		Owner: &metav1.OwnerReference{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: d.Name, UID: d.UID, Controller: ptr.To(true)},
		Ref:   &corev1.ObjectReference{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Namespace: d.Namespace, Name: d.Name, UID: d.UID},
		// No webhook guards the embedded spec: ReconcileSpec validates it
		// and reports errors under this path (status condition Valid).
		SpecPath: field.NewPath("spec", "module"),
	})
	if !equality.Semantic.DeepEqual(d.Status.Module, res.Status) {
		d.Status.Module = res.Status
		if uerr := r.Status().Update(ctx, &d); uerr != nil {
			return ctrl.Result{}, uerr
		}
	}
	if res.Done && controllerutil.RemoveFinalizer(&d, finalizer) {
		if uerr := r.Update(ctx, &d); uerr != nil {
			return ctrl.Result{}, client.IgnoreNotFound(uerr)
		}
	}
	return ctrl.Result{RequeueAfter: res.RequeueAfter}, err
}

// SetupWithManager registers the controller: NICDrivers, their worker
// Pods, and every node change (a kernel, label or taint may concern any
// NICDriver).
func (r *NICDriverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list api.NICDriverList
		if err := r.List(ctx, &list); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for _, d := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&d)})
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&api.NICDriver{}).
		Owns(&corev1.Pod{}).
		Watches(&corev1.Node{}, all).
		Complete(r)
}

// NewManager builds the manager and the controller on cfg.
func NewManager(cfg *rest.Config, workerImage string, opts ctrl.Options) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := api.AddToScheme(scheme); err != nil {
		return nil, err
	}
	opts.Scheme = scheme
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	log := mgr.GetLogger()
	recorder := mgr.GetEventRecorderFor("nicdriver-operator")
	pl, err := loader.NewPodLoader(cs, loader.PodOptions{WorkerImage: workerImage}, loader.WithEventRecorder(recorder), loader.WithPodLoaderLogger(log))
	if err != nil {
		return nil, err
	}
	rc, err := registry.NewClient(registry.WithLogger(log))
	if err != nil {
		return nil, err
	}
	k, err := kmm.NewReconciler(cs, kmm.WithRegistry(rc), kmm.WithNodeLoader(pl), kmm.WithEventRecorder(recorder), kmm.WithLogger(log),
		kmm.WithNodeLister(func(ctx context.Context) ([]*corev1.Node, error) {
			var nl corev1.NodeList
			if err := mgr.GetClient().List(ctx, &nl); err != nil { // from the manager's cache
				return nil, err
			}
			out := make([]*corev1.Node, len(nl.Items))
			for i := range nl.Items {
				out[i] = &nl.Items[i]
			}
			return out, nil
		}))
	if err != nil {
		return nil, err
	}
	if err := (&NICDriverReconciler{Client: mgr.GetClient(), KMM: k}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return mgr, nil
}

func main() {
	workerImage := flag.String("worker-image", "quay.io/kmmkit/kmm:latest", "image with the static kmm binary")
	flag.Parse()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mgr, err := NewManager(cfg, *workerImage, ctrl.Options{Metrics: metricsserver.Options{BindAddress: "0"}})
	if err == nil {
		err = mgr.Start(ctrl.SetupSignalHandler())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
