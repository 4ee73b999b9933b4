// Package crtest sets up the integration tests of the controller-runtime
// module: a manager on the test kube-apiserver, limited to the test's
// namespaces, with the Module CRD installed.
package crtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

// Env is one test's share of the test API server.
type Env struct {
	Config    *rest.Config
	Clientset kubernetes.Interface
	Scheme    *runtime.Scheme
	// Client writes without a cache, as a user would.
	Client client.Client
	// Run is a random word that names the test's objects.
	Run string
}

// New connects to the test API server (stopping the test as testenv.Need
// does when there is none) and installs the Module CRD.
func New(t *testing.T) *Env {
	t.Helper()
	cfg := testenv.RESTConfig(t)
	testenv.InstallCRD(t, cfg, v1beta1.CRD())
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := Scheme(t)
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Config: cfg, Clientset: cs, Scheme: s, Client: c, Run: fmt.Sprintf("cr%d", rand.Uint32()%1000000)}
}

// Scheme knows client-go's types and v1beta1's Module.
func Scheme(t testing.TB) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1beta1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Namespace creates a namespace for the test (deleted after it), with the
// Pod Security level worker Pods need.
func (e *Env) Namespace(t *testing.T, suffix string) string {
	t.Helper()
	ns := e.Run + "-" + suffix
	testenv.Namespace(t, e.Clientset, ns)
	patch := []byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}`)
	if _, err := e.Clientset.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("labelling namespace %s: %v", ns, err)
	}
	return ns
}

// Options are manager options for a test: metrics and probes off, the
// namespaced objects cached only in namespaces, nodes everywhere, and the
// test's logger.
func (e *Env) Options(t *testing.T, namespaces ...string) ctrl.Options {
	defaults := map[string]cache.Config{}
	for _, ns := range namespaces {
		defaults[ns] = cache.Config{}
	}
	return ctrl.Options{
		Scheme:                 e.Scheme,
		Logger:                 testr.NewWithOptions(t, testr.Options{Verbosity: 1}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: defaults, ByObject: map[client.Object]cache.ByObject{}},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
}

// Start runs mgr until the test ends and waits for its caches.
func Start(t *testing.T, mgr ctrl.Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if !mgr.GetCache().WaitForCacheSync(sctx) {
		t.Fatal("the manager's cache never synced")
	}
}

// Eventually polls cond every 50 ms for up to 30 s and fails the test
// with what when it never holds.
func Eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, cond)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// ReadyNode creates a ready node (deleted after the test).
func (e *Env) ReadyNode(t *testing.T, name string, labels map[string]string, kernel, bootID string) *corev1.Node {
	t.Helper()
	return testenv.ReadyNode(t, e.Clientset, name, labels, kernel, bootID)
}

// InstallCRDs installs every CustomResourceDefinition of a multi-document
// manifest.
func (e *Env) InstallCRDs(t *testing.T, manifest []byte) {
	t.Helper()
	for _, doc := range bytes.Split(manifest, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) > 0 {
			testenv.InstallCRD(t, e.Config, doc)
		}
	}
}

// PushModule assembles a kmod image holding one module (extra/<name>.ko)
// for kernel and pushes it to image (on a plain-HTTP registry).
func PushModule(t *testing.T, image, kernel, name string) {
	t.Helper()
	ctx := context.Background()
	img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kernel,
		Modules: []assemble.File{{Path: "extra/" + name + ".ko", Data: elftest.Module{}.Bytes()}}})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := registry.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Push(ctx, registry.Request{Image: image, TLS: v1beta1.TLSOptions{Insecure: true}}, img); err != nil {
		t.Fatalf("pushing %s: %v", image, err)
	}
}

// Context is a context that carries the test's logger and ends with the
// test.
func Context(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), testr.New(t)))
	t.Cleanup(cancel)
	return ctx
}
