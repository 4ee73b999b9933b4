package fleetbench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
)

// Config is the fleet to build.
type Config struct {
	// Run names what the fleet creates: namespace fleet-<Run>, nodes
	// <Run>-NNNNN with the label fleet=<Run>, images under <Run>/.
	Run string
	// Nodes on Kernels kernels (node i runs kernel i % Kernels), and
	// Modules Modules, each loaded on every node.
	Nodes, Kernels, Modules int
	// Registry is host:port of a TLS registry with htpasswd
	// authentication: CAFile signed its certificate, User and Password
	// log in. The Modules read them from their imageRepoSecret.
	Registry, CAFile, User, Password string
	// Parallel is how many requests the driver has in flight at once.
	Parallel int
}

// Kernel is the kernel of index k.
func Kernel(k int) string { return fmt.Sprintf("6.1.0-%d-amd64", k) }

// Fleet is a built fleet and its driver's clients (not the Controller's:
// the driver's requests are not counted).
type Fleet struct {
	Config
	Namespace string
	cs        kubernetes.Interface
	modules   kmm.ModuleClient
	nodes     []string
}

// NodeName is the name of node i.
func (f *Fleet) NodeName(i int) string { return fmt.Sprintf("%s-%05d", f.Run, i) }

// Setup builds the fleet: the Module CRD, the namespace, the pull secret,
// Modules × (Kernels+1) images (one more kernel for ChangeKernels), the
// Modules and the nodes. cfg is the driver's client configuration.
func Setup(ctx context.Context, cfg *rest.Config, c Config) (*Fleet, error) {
	if c.Parallel <= 0 {
		c.Parallel = 16
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	f := &Fleet{Config: c, Namespace: "fleet-" + c.Run, cs: cs, modules: kmm.NewModuleClient(dyn)}
	if err := testenv.ApplyCRD(ctx, cfg, v1beta1.CRD()); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.Namespace}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating namespace %s: %w", f.Namespace, err)
	}
	// No controller-manager makes the default service account.
	if _, err := cs.CoreV1().ServiceAccounts(f.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating service account %s/default: %w", f.Namespace, err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(c.User + ":" + c.Password))
	if _, err := cs.CoreV1().Secrets(f.Namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pull"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, c.Registry, auth)},
	}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating the pull secret: %w", err)
	}
	if err := f.pushImages(ctx); err != nil {
		return nil, err
	}
	for m := 0; m < c.Modules; m++ {
		if _, err := f.modules.Create(ctx, f.module(m)); err != nil {
			return nil, fmt.Errorf("creating module %d: %w", m, err)
		}
	}
	err = parallel(ctx, c.Parallel, c.Nodes, func(i int) error {
		_, err := cs.CoreV1().Nodes().Create(ctx, f.node(i), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating nodes: %w", err)
	}
	return f, nil
}

// ModuleName is the name of Module m.
func ModuleName(m int) string { return fmt.Sprintf("mod-%d", m) }

func (f *Fleet) image(m int) string { return fmt.Sprintf("%s/%s/mod-%d", f.Registry, f.Run, m) }

func (f *Fleet) module(m int) *v1beta1.Module {
	return &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: ModuleName(m), Namespace: f.Namespace},
		Spec: v1beta1.ModuleSpec{
			Selector:        map[string]string{"fleet": f.Run},
			ImageRepoSecret: &corev1.LocalObjectReference{Name: "pull"},
			// The API server taints new nodes not-ready; nothing here
			// clears it (no node lifecycle controller).
			Tolerations: []corev1.Toleration{{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists}},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe:       v1beta1.ModprobeSpec{ModuleName: fmt.Sprintf("drv%d", m)},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: f.image(m) + ":${KERNEL_FULL_VERSION}"}},
			}},
		},
	}
}

func (f *Fleet) node(i int) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: f.NodeName(i), Labels: map[string]string{"fleet": f.Run}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			NodeInfo:   corev1.NodeSystemInfo{KernelVersion: Kernel(i % f.Kernels), BootID: "boot-0"},
		},
	}
}

// pushImages pushes one small image under the tag of every kernel (and
// one more) of every Module.
func (f *Fleet) pushImages(ctx context.Context) error {
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return fmt.Errorf("reading the registry CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", f.CAFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	img, err := random.Image(512, 1)
	if err != nil {
		return err
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr),
		remote.WithAuth(&authn.Basic{Username: f.User, Password: f.Password})}
	// The layer first, once per repository; then the tags.
	for m := 0; m < f.Modules; m++ {
		if err := f.push(f.image(m)+":"+Kernel(0), img, opts); err != nil {
			return err
		}
	}
	n := f.Kernels + 1
	return parallel(ctx, 8, f.Modules*n, func(i int) error {
		return f.push(f.image(i/n)+":"+Kernel(i%n), img, opts)
	})
}

func (f *Fleet) push(ref string, img v1.Image, opts []remote.Option) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img, opts...); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}

// ChangeKernels moves nodes [0, n) to the extra kernel (index Kernels),
// with a new boot ID, as a reboot into a new kernel does.
func (f *Fleet) ChangeKernels(ctx context.Context, n int) error {
	patch := fmt.Appendf(nil, `{"status":{"nodeInfo":{"kernelVersion":%q,"bootID":"boot-1"}}}`, Kernel(f.Kernels))
	return parallel(ctx, f.Parallel, n, func(i int) error {
		_, err := f.cs.CoreV1().Nodes().Patch(ctx, f.NodeName(i), types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		return err
	})
}

// Cleanup deletes what Setup created (the nodes, the Modules with their
// finalizer dropped, the worker Pods and the namespace); the images stay.
func (f *Fleet) Cleanup(ctx context.Context) error {
	var errs []error
	errs = append(errs, f.cs.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "fleet=" + f.Run}))
	mods, err := f.modules.List(ctx, f.Namespace)
	errs = append(errs, err)
	for i := range mods {
		m := &mods[i]
		m.Finalizers = nil
		if _, err := f.modules.Update(ctx, m); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, f.cs.CoreV1().Pods(f.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{}))
	if err := f.cs.CoreV1().Namespaces().Delete(ctx, f.Namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Kubelet plays the kubelet for the fleet's worker Pods: every worker
// Pod that is not finished is marked Succeeded, as a worker that loaded or
// unloaded its module leaves it, from a watch and in parallel.
type Kubelet struct {
	finished atomic.Int64
	mu       sync.Mutex
	err      error
}

// StartKubelet starts a Kubelet that runs until ctx ends.
func (f *Fleet) StartKubelet(ctx context.Context) (*Kubelet, error) {
	k := &Kubelet{}
	fac := informers.NewSharedInformerFactoryWithOptions(f.cs, 0, informers.WithNamespace(f.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = loader.LabelWorkerAction }))
	inf := fac.Core().V1().Pods().Informer()
	work := make(chan *corev1.Pod, 4096)
	offer := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if ok && p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			select {
			case work <- p:
			case <-ctx.Done():
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: offer, UpdateFunc: func(_, o any) { offer(o) }}); err != nil {
		return nil, err
	}
	for w := 0; w < f.Parallel; w++ {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case p := <-work:
					k.finish(ctx, f.cs, p)
				}
			}
		}()
	}
	fac.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, errors.New("the kubelet's pod informer never synced")
	}
	return k, nil
}

func (k *Kubelet) finish(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) {
	p = p.DeepCopy()
	now := metav1.NewTime(time.Now())
	p.Status.Phase = corev1.PodSucceeded
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: p.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: now}}}}
	_, err := cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	switch {
	case err == nil:
		k.finished.Add(1)
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err) || ctx.Err() != nil:
		// Gone, or changed since: a newer version comes through the watch.
	default:
		k.mu.Lock()
		if k.err == nil {
			k.err = fmt.Errorf("finishing worker pod %s: %w", p.Name, err)
		}
		k.mu.Unlock()
	}
}

// Finished returns how many worker Pods it finished.
func (k *Kubelet) Finished() int64 { return k.finished.Load() }

// Err returns the first unexpected error of an update.
func (k *Kubelet) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// parallel runs do(0) … do(n-1) with at most p at once and returns the
// first error.
func parallel(ctx context.Context, p, n int, do func(i int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for w := 0; w < p; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := do(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
