package operator_test

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kmmkit/kmmkit/controllerruntime/cached"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/testapi"
	"github.com/kmmkit/kmmkit/controllerruntime/operator"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// An operator for KMM's own Module: the manager, its cache of kmmkit's
// Pods, and the controller.
func ExampleSetupModule() {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1beta1.AddToScheme(scheme)
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{Scheme: scheme,
		Cache: cache.Options{ByObject: cached.ByObject(identity.Domain{})}})
	if err != nil {
		panic(err)
	}
	if err := operator.SetupModule(mgr, operator.Options{WorkerImage: "quay.io/acme/kmm-worker:v1"}); err != nil {
		panic(err)
	}
	_ = mgr.Start(ctrl.SetupSignalHandler())
}

// An operator whose own kind embeds a ModuleSpec at spec.driver and its
// status at status.driver.
func ExampleSetupEmbedded() {
	id := identity.Domain{Name: "accel.acme.io", Kind: "Accel"}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = testapi.AddToScheme(scheme)
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{Scheme: scheme,
		Cache: cache.Options{ByObject: cached.ByObject(id)}})
	if err != nil {
		panic(err)
	}
	err = operator.SetupEmbedded(mgr, operator.Embedded[*testapi.Accel]{
		Identity: id,
		New:      func() *testapi.Accel { return &testapi.Accel{} },
		NewList:  func() client.ObjectList { return &testapi.AccelList{} },
		Spec:     func(a *testapi.Accel) v1beta1.ModuleSpec { return a.Spec.Driver },
		Status:   func(a *testapi.Accel) *v1beta1.ModuleStatus { return &a.Status.Driver },
		SpecPath: field.NewPath("spec", "driver"),
	}, operator.Options{WorkerImage: "quay.io/acme/kmm-worker:v1"})
	if err != nil {
		panic(err)
	}
	_ = mgr.Start(ctrl.SetupSignalHandler())
}
