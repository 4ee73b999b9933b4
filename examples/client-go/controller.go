// Command client-go is a Module operator written with plain client-go:
// shared informers for Modules, nodes and worker Pods, a rate-limited
// workqueue, and kmm.Reconcile doing the work.
//
//	go run ./examples/client-go --kubeconfig ~/.kube/config --worker-image quay.io/kmmkit/kmm:latest
//
// Every change to a Module, to a node (kernel, labels, taints, reboot) or
// to a worker Pod queues the Modules it concerns; Reconcile's RequeueAfter
// goes back into the queue with AddAfter, and errors with backoff.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	workerImage := flag.String("worker-image", "quay.io/kmmkit/kmm:latest", "image with the static kmm binary")
	namespace := flag.String("namespace", "", "watch Modules in this namespace only (default: all)")
	flag.Parse()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
	if err := Run(ctx, cfg, *namespace, *workerImage, log); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Run runs the controller until ctx ends, for the Modules of namespace
// ("" for all namespaces).
func Run(ctx context.Context, cfg *rest.Config, namespace, workerImage string, log logr.Logger) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	nodes := factory.Core().V1().Nodes()
	pods := informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = loader.LabelWorkerAction })).Core().V1().Pods()
	dynFactory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 10*time.Minute, namespace, nil)
	modules := dynFactory.ForResource(kmm.ModuleGVR)

	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kmmkit-client-go-example"})

	podLoader, err := loader.NewPodLoader(cs, workerImage,
		loader.WithEventRecorder(recorder), loader.WithLogger(log),
		// Worker Pods come from the informer's cache too; the PodLoader reads
		// again from the API server whatever a lagging cache contradicts.
		loader.WithPodLister(func(_ context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error) {
			return pods.Lister().Pods(ns).List(sel)
		}))
	if err != nil {
		return err
	}
	rc, err := registry.NewClient(registry.WithLogger(log))
	if err != nil {
		return err
	}
	r, err := kmm.NewReconciler(cs,
		kmm.WithModuleClient(kmm.NewModuleClient(dyn)),
		kmm.WithRegistry(rc),
		kmm.WithNodeLoader(podLoader),
		kmm.WithEventRecorder(recorder),
		kmm.WithLogger(log),
		// Nodes come from the informer's cache, not from the API server.
		kmm.WithNodeLister(func(context.Context) ([]*corev1.Node, error) { return nodes.Lister().List(labels.Everything()) }),
	)
	if err != nil {
		return err
	}

	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	enqueueAll := func() {
		for _, o := range modules.Informer().GetStore().List() {
			if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
				queue.Add(key)
			}
		}
	}
	handlers := func(onEvent func(obj any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    onEvent,
			UpdateFunc: func(_, obj any) { onEvent(obj) },
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				onEvent(obj)
			},
		}
	}
	if _, err := modules.Informer().AddEventHandler(handlers(func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	})); err != nil {
		return err
	}
	// A node change may concern any Module (selector, kernel, taints).
	if _, err := nodes.Informer().AddEventHandler(handlers(func(any) { enqueueAll() })); err != nil {
		return err
	}
	// A worker Pod concerns the Module named by its label.
	if _, err := pods.Informer().AddEventHandler(handlers(func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			if name := p.Labels[loader.LabelModuleName]; name != "" && p.Labels[loader.LabelWorkerAction] != "" {
				queue.Add(p.Namespace + "/" + name)
			}
		}
	})); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	go pods.Informer().Run(ctx.Done())
	dynFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return errors.New("pod cache did not sync")
	}
	for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return errors.New("caches did not sync")
		}
	}
	for _, ok := range dynFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return errors.New("module cache did not sync")
		}
	}
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		key, quit := queue.Get()
		if quit {
			return ctx.Err()
		}
		requeue, err := reconcile(ctx, r, modules.Lister(), key)
		switch {
		case err != nil:
			log.Error(err, "reconcile", "module", key)
			queue.AddRateLimited(key)
		case requeue > 0:
			queue.Forget(key)
			queue.AddAfter(key, requeue)
		default:
			queue.Forget(key)
		}
		queue.Done(key)
	}
}

// reconcile runs kmm.Reconcile for the Module with key.
func reconcile(ctx context.Context, r *kmm.Reconciler, lister cache.GenericLister, key string) (time.Duration, error) {
	obj, err := lister.Get(key)
	if apierrors.IsNotFound(err) {
		return 0, nil // deleted; its finalizer let it go
	}
	if err != nil {
		return 0, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return 0, fmt.Errorf("module %s: unexpected %T in the cache", key, obj)
	}
	m := new(v1beta1.Module)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, m); err != nil {
		return 0, fmt.Errorf("module %s: %w", key, err)
	}
	res, err := r.Reconcile(ctx, m)
	return res.RequeueAfter, err
}
