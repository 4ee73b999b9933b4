// Package cached gives kmmkit's Reconciler and PodLoader their views of the
// cluster from a controller-runtime manager's cache instead of a list from
// the API server on every pass.
//
//	mgr, _ := ctrl.NewManager(cfg, ctrl.Options{Cache: cache.Options{ByObject: cached.ByObject(id)}})
//	kmm.NewReconciler(cs, kmm.WithNodeLister(cached.Nodes(mgr.GetCache())), …)
//	loader.NewPodLoader(cs, workerImage, loader.WithPodLister(cached.Pods(mgr.GetCache())), …)
//
// Nodes and Pods come from the cache as they are: kmmkit never modifies
// what a lister returns, and the PodLoader reads a node or Pod again from
// the API server whenever the cache contradicts its own writes (see
// package loader), so a lagging cache is safe. ByObject limits the cached
// Pods to those that carry an identity's owner-name label: kmmkit's
// worker and build Pods (and KMM's device-plugin Pods), never every Pod
// of the cluster.
//
// kmmkit reads Secrets (pull, build and signing secrets), ConfigMaps
// (Dockerfiles) and Namespaces (is it terminating?) through its
// clientset, one get each when it needs one. Clientset wraps a clientset
// so that those gets come from a cache instead; that needs list and watch
// on them, and holds every Secret of the cached namespaces in memory, so
// it is a choice, not the default.
package cached

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/loader"
)

// Nodes lists the nodes of r (the manager's cache) for kmm.WithNodeLister.
// The nodes are the cache's own objects, not copies: kmmkit only reads
// them, as it reads an informer lister's.
func Nodes(r client.Reader) kmm.NodeLister {
	return func(ctx context.Context) ([]*corev1.Node, error) {
		var list corev1.NodeList
		if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing nodes from the cache: %w", err)
		}
		out := make([]*corev1.Node, len(list.Items))
		for i := range list.Items {
			out[i] = &list.Items[i]
		}
		return out, nil
	}
}

// Pods lists the Pods of r (the manager's cache) for loader.WithPodLister.
// The cache must hold the identity's worker Pods: with ByObject it holds
// only Pods with the identity's owner-name label, which includes them.
func Pods(r client.Reader) loader.PodLister {
	return func(ctx context.Context, namespace string, sel labels.Selector) ([]*corev1.Pod, error) {
		var list corev1.PodList
		if err := r.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: sel},
			client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing pods %s in namespace %s from the cache: %w", sel, namespace, err)
		}
		out := make([]*corev1.Pod, len(list.Items))
		for i := range list.Items {
			out[i] = &list.Items[i]
		}
		return out, nil
	}
}

// PodSelector selects the Pods kmmkit runs for owners of d: every worker
// and build Pod (and KMM's device-plugin Pods) carries d's owner-name label
// (identity.Owner.NameLabel: kmm.node.kubernetes.io/module.name for KMM's
// Module).
func PodSelector(d identity.Domain) labels.Selector {
	req, err := labels.NewRequirement(d.Owner("", "x").NameLabel(), selection.Exists, nil)
	if err != nil {
		// A Domain's keys are valid label keys (identity.Domain.Validate);
		// an invalid one selects nothing rather than everything.
		return labels.Nothing()
	}
	return labels.NewSelector().Add(*req)
}

// ByObject is the cache configuration for kmmkit's Pods and DaemonSets of
// d, to put in ctrl.Options.Cache.ByObject: only Pods (worker, build and
// device plugin Pods) and DaemonSets (the device plugin's) with d's
// owner-name label are cached. A label selector cannot say "this label or that", so a manager
// that runs owners of two domains, or that needs other Pods too, caches
// Pods without it (or by a label of its own).
func ByObject(d identity.Domain) map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{&corev1.Pod{}: {Label: PodSelector(d)}, &appsv1.DaemonSet{}: {Label: PodSelector(d)}}
}

// Clientset returns cs with the gets kmmkit makes of Secrets, ConfigMaps
// and Namespaces served by r (the manager's cache); every other call goes
// to cs. The Secrets it finds are the cache's, so a Secret created a
// moment ago may not be seen yet: kmmkit reports a missing pull secret as
// Unauthorized and tries again a minute later. r must be allowed to list
// and watch Secrets, ConfigMaps and Namespaces (cluster-wide, or in the
// namespaces the manager caches), which the operator's role does not
// grant by default.
func Clientset(cs kubernetes.Interface, r client.Reader) kubernetes.Interface {
	return clientset{Interface: cs, r: r}
}

type clientset struct {
	kubernetes.Interface
	r client.Reader
}

func (c clientset) CoreV1() corev1client.CoreV1Interface {
	return coreV1{CoreV1Interface: c.Interface.CoreV1(), r: c.r}
}

type coreV1 struct {
	corev1client.CoreV1Interface
	r client.Reader
}

func (c coreV1) Secrets(namespace string) corev1client.SecretInterface {
	return secrets{SecretInterface: c.CoreV1Interface.Secrets(namespace), r: c.r, ns: namespace}
}

func (c coreV1) ConfigMaps(namespace string) corev1client.ConfigMapInterface {
	return configMaps{ConfigMapInterface: c.CoreV1Interface.ConfigMaps(namespace), r: c.r, ns: namespace}
}

func (c coreV1) Namespaces() corev1client.NamespaceInterface {
	return namespaces{NamespaceInterface: c.CoreV1Interface.Namespaces(), r: c.r}
}

type secrets struct {
	corev1client.SecretInterface
	r  client.Reader
	ns string
}

func (s secrets) Get(ctx context.Context, name string, _ metav1.GetOptions) (*corev1.Secret, error) {
	return get(ctx, s.r, s.ns, name, &corev1.Secret{})
}

type configMaps struct {
	corev1client.ConfigMapInterface
	r  client.Reader
	ns string
}

func (c configMaps) Get(ctx context.Context, name string, _ metav1.GetOptions) (*corev1.ConfigMap, error) {
	return get(ctx, c.r, c.ns, name, &corev1.ConfigMap{})
}

type namespaces struct {
	corev1client.NamespaceInterface
	r client.Reader
}

func (n namespaces) Get(ctx context.Context, name string, _ metav1.GetOptions) (*corev1.Namespace, error) {
	return get(ctx, n.r, "", name, &corev1.Namespace{})
}

// get reads one object from r; its errors are the API's (a missing object
// is apierrors.IsNotFound), as the clientset's are.
func get[T client.Object](ctx context.Context, r client.Reader, namespace, name string, obj T) (T, error) {
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, obj); err != nil {
		var zero T
		return zero, err
	}
	return obj, nil
}
