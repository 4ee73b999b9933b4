// Command controller-runtime is an operator whose own CRD, NICDriver,
// embeds KMM's ModuleSpec: operator.SetupEmbedded gives it the whole of
// kmmkit — the finalizer, the status, events, the owner references of its
// worker Pods, and the watches on nodes and Pods — on a controller-runtime
// manager.
//
//	cd examples/controller-runtime && go run . --worker-image quay.io/kmmkit/kmm:latest
//
// It uses the kubeconfig controller-runtime finds (--kubeconfig,
// KUBECONFIG, in-cluster). Install config/example.kmmkit.io_nicdrivers.yaml
// first; config/role.yaml is the role it needs.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kmmkit/kmmkit/controllerruntime/cached"
	"github.com/kmmkit/kmmkit/controllerruntime/operator"
	"github.com/kmmkit/kmmkit/examples/controller-runtime/api"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Identity names what kmmkit writes for NICDrivers: node labels,
// worker Pods and builds in the operator's own label domain.
var Identity = identity.Domain{Name: "example.kmmkit.io", Kind: "NICDriver"}

// The NICDriver controller's own rules; kmmkit's come from package
// operator's markers (controller-gen rbac, see config/role.yaml).
//
// +kubebuilder:rbac:groups=example.kmmkit.io,resources=nicdrivers,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=example.kmmkit.io,resources=nicdrivers/status,verbs=patch
// +kubebuilder:rbac:groups=example.kmmkit.io,resources=nicdrivers/finalizers,verbs=update

// NewManager builds the manager and the NICDriver controller on cfg.
func NewManager(cfg *rest.Config, workerImage string, opts ctrl.Options) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := api.AddToScheme(scheme); err != nil {
		return nil, err
	}
	opts.Scheme = scheme
	// Cache only kmmkit's Pods of NICDrivers, not every Pod of the
	// cluster (the caller's cache settings win).
	byObject := cached.ByObject(Identity)
	maps.Copy(byObject, opts.Cache.ByObject)
	opts.Cache.ByObject = byObject
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return nil, err
	}
	err = operator.SetupEmbedded(mgr, operator.Embedded[*api.NICDriver]{
		Identity: Identity,
		New:      func() *api.NICDriver { return &api.NICDriver{} },
		NewList:  func() client.ObjectList { return &api.NICDriverList{} },
		Spec:     func(d *api.NICDriver) v1beta1.ModuleSpec { return d.Spec.Module.ModuleSpec() },
		Status:   func(d *api.NICDriver) *v1beta1.ModuleStatus { return &d.Status.Module },
		// No webhook guards the embedded spec: kmmkit validates it and
		// reports errors under this path (status condition Valid).
		SpecPath: field.NewPath("spec", "module"),
	}, operator.Options{WorkerImage: workerImage})
	return mgr, err
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
