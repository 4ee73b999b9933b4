package fleetbench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

// ControllerConfig is how the Controller under test runs.
type ControllerConfig struct {
	// Namespace holds the Modules and their worker Pods.
	Namespace string
	// QPS and Burst are the client-side rate limits of the Controller's
	// clients (client-go's token bucket).
	QPS   float32
	Burst int
	// Workers reconcile Modules in parallel (each Module by one at a time).
	Workers int
	// CAFile signed the registry's certificate.
	CAFile string
	// Progress, when set, gets a line every 30 s while WaitLoaded waits.
	Progress io.Writer
	// TTL is how long the registry client caches an image that exists,
	// and how often the Reconciler verifies it again (0: the defaults,
	// 5 and 10 minutes). A steady pass asks the registry nothing only
	// within it.
	TTL time.Duration
}

// Controller is an operator as kmmkit's users write one: shared
// informers for nodes, worker Pods and Modules, a rate-limited workqueue,
// kmm.Reconciler.Reconcile with the real registry.Client and
// loader.PodLoader reading through the informers. Every API request it
// sends is counted by verb and resource, and every registry request.
type Controller struct {
	API      *Requests
	Registry *RegistryRequests

	cc      ControllerConfig
	r       *kmm.Reconciler
	nodes   corelisters.NodeLister
	modules cache.GenericLister
	modInf  cache.SharedIndexInformer
	queue   workqueue.TypedRateLimitingInterface[string]

	pause    sync.RWMutex // held for writing while a measured pass runs
	busy     atomic.Int64 // Reconciles running in the queue's workers
	passes   atomic.Int64
	epoch    atomic.Int64
	mu       sync.Mutex
	results  map[string]result // Module key → its last pass
	lastErr  error
	errCount int64
	peakHeap atomic.Uint64
}

// result is what the last pass over a Module said.
type result struct {
	epoch              int64
	available, desired int32
}

// Phase is what the Controller did between two points.
type Phase struct {
	Wall time.Duration
	// CPU is the process's CPU time (user and system) in the phase.
	CPU      time.Duration
	API      Counts
	Registry int64
	Passes   int64
}

// NewController builds the Controller on cfg (copied: its rate limits and
// the counting transport are set on the copy) and waits for its caches.
// It reconciles nothing until Run.
func NewController(ctx context.Context, cfg *rest.Config, cc ControllerConfig) (*Controller, error) {
	c := &Controller{API: NewRequests(), Registry: &RegistryRequests{}, cc: cc, results: map[string]result{}}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = cc.QPS, cc.Burst
	cfg.Wrap(c.API.Wrap)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	nodeFac := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(kmm.TrimNode))
	nodeInf := nodeFac.Core().V1().Nodes()
	podFac := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(cc.Namespace),
		informers.WithTransform(kmm.TrimPod),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = loader.LabelWorkerAction }))
	podInf := podFac.Core().V1().Pods()
	modFac := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, cc.Namespace, nil)
	mods := modFac.ForResource(kmm.ModuleGVR)
	c.nodes, c.modules, c.modInf = nodeInf.Lister(), mods.Lister(), mods.Informer()

	ca, err := os.ReadFile(cc.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the registry CA: %w", err)
	}
	base := defaultTransport()
	ropts := []registry.Option{registry.WithCABundle(ca), registry.WithBaseTransport(c.Registry.Transport(base))}
	var kopts []kmm.Option
	if cc.TTL > 0 {
		ropts = append(ropts, registry.WithTTL(cc.TTL, 30*time.Second))
		kopts = append(kopts, kmm.WithVerifyInterval(cc.TTL))
	}
	rc, err := registry.NewClient(ropts...)
	if err != nil {
		return nil, err
	}
	pl, err := loader.NewPodLoader(cs, "registry.invalid/kmm-worker:bench",
		loader.WithLogger(logr.Discard()),
		loader.WithPodLister(func(_ context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error) {
			return podInf.Lister().Pods(ns).List(sel)
		}))
	if err != nil {
		return nil, err
	}
	kopts = append(kopts,
		kmm.WithModuleClient(kmm.NewModuleClient(dyn)),
		kmm.WithRegistry(rc),
		kmm.WithNodeLoader(pl),
		kmm.WithLogger(logr.Discard()),
		kmm.WithNodeLister(func(context.Context) ([]*corev1.Node, error) { return nodeInf.Lister().List(labels.Everything()) }))
	c.r, err = kmm.NewReconciler(cs, kopts...)
	if err != nil {
		return nil, err
	}

	c.queue = workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 5*time.Second))
	handlers := func(on func(obj any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{AddFunc: on, UpdateFunc: func(_, o any) { on(o) }, DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			on(o)
		}}
	}
	if _, err := c.modInf.AddEventHandler(handlers(func(o any) {
		if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
			c.queue.Add(key)
		}
	})); err != nil {
		return nil, err
	}
	if _, err := nodeInf.Informer().AddEventHandler(handlers(func(any) { c.enqueueAll() })); err != nil {
		return nil, err
	}
	if _, err := podInf.Informer().AddEventHandler(handlers(func(o any) {
		if p, ok := o.(*corev1.Pod); ok && p.Labels[loader.LabelModuleName] != "" {
			c.queue.Add(p.Namespace + "/" + p.Labels[loader.LabelModuleName])
		}
	})); err != nil {
		return nil, err
	}
	nodeFac.Start(ctx.Done())
	podFac.Start(ctx.Done())
	modFac.Start(ctx.Done())
	for _, ok := range nodeFac.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, errors.New("the node cache never synced")
		}
	}
	for _, ok := range podFac.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, errors.New("the pod cache never synced")
		}
	}
	for _, ok := range modFac.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, errors.New("the module cache never synced")
		}
	}
	go c.sampleHeap(ctx)
	return c, nil
}

func (c *Controller) enqueueAll() {
	for _, o := range c.modInf.GetStore().List() {
		if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
			c.queue.Add(key)
		}
	}
}

// Run starts the queue's workers; they stop when ctx ends.
func (c *Controller) Run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	c.enqueueAll()
	for w := 0; w < max(1, c.cc.Workers); w++ {
		go func() {
			for {
				key, quit := c.queue.Get()
				if quit {
					return
				}
				c.busy.Add(1)
				c.pause.RLock()
				requeue, err := c.reconcile(ctx, key)
				c.pause.RUnlock()
				c.busy.Add(-1)
				switch {
				case err != nil:
					c.queue.AddRateLimited(key)
				case requeue > 0:
					c.queue.Forget(key)
					c.queue.AddAfter(key, requeue)
				default:
					c.queue.Forget(key)
				}
				c.queue.Done(key)
			}
		}()
	}
}

// reconcile makes one pass over the Module key and records its counts.
func (c *Controller) reconcile(ctx context.Context, key string) (time.Duration, error) {
	epoch := c.epoch.Load()
	obj, err := c.modules.Get(key)
	if err != nil {
		return 0, nil // gone
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return 0, fmt.Errorf("module %s: unexpected %T", key, obj)
	}
	m := new(v1beta1.Module)
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructured(u.Object, m); err != nil {
		return 0, fmt.Errorf("module %s: %w", key, err)
	}
	res, err := c.r.Reconcile(ctx, m)
	c.passes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.lastErr, c.errCount = fmt.Errorf("module %s: %w", key, err), c.errCount+1
	}
	if s := res.Status.ModuleLoader; s != nil {
		c.results[key] = result{epoch: epoch, available: s.AvailableNumber, desired: s.DesiredNumber}
	}
	return res.RequeueAfter, err
}

// Mark starts a phase: it returns the point that Since measures from.
func (c *Controller) Mark() Mark {
	return Mark{at: time.Now(), cpu: cpuTime(), api: c.API.Snapshot(), reg: c.Registry.Load(), passes: c.passes.Load()}
}

// Mark is a point in the Controller's work.
type Mark struct {
	at     time.Time
	cpu    time.Duration
	api    Counts
	reg    int64
	passes int64
}

// Since is what the Controller did since m.
func (c *Controller) Since(m Mark) Phase {
	return Phase{Wall: time.Since(m.at), CPU: cpuTime() - m.cpu, API: c.API.Snapshot().Sub(m.api), Registry: c.Registry.Load() - m.reg, Passes: c.passes.Load() - m.passes}
}

// WaitLoaded waits until a pass over each of modules Modules that started
// after this call says it is available on want nodes, and (when
// onKernel > 0) the node cache shows onKernel nodes on kernel first.
func (c *Controller) WaitLoaded(ctx context.Context, modules, want int, kernel string, onKernel int) error {
	if onKernel > 0 {
		for {
			n := 0
			list, err := c.nodes.List(labels.Everything())
			if err != nil {
				return err
			}
			for _, node := range list {
				if node.Status.NodeInfo.KernelVersion == kernel {
					n++
				}
			}
			if n >= onKernel {
				break
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return fmt.Errorf("%d of %d nodes on kernel %s in the cache: %w", n, onKernel, kernel, err)
			}
		}
	}
	epoch := c.epoch.Add(1)
	c.enqueueAll()
	next := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		done, available := 0, 0
		for _, r := range c.results {
			available += int(r.available)
			if r.epoch >= epoch && int(r.available) == want && int(r.desired) == want {
				done++
			}
		}
		errs, last := c.errCount, c.lastErr
		c.mu.Unlock()
		if done >= modules {
			return nil
		}
		if c.cc.Progress != nil && time.Now().After(next) {
			next = time.Now().Add(30 * time.Second)
			fmt.Fprintf(c.cc.Progress, "controller: %d of %d Modules done, %d (node, module) pairs available, %d passes, %d failed (last: %v), API %s\n",
				done, modules, available, c.passes.Load(), errs, last, c.API.Snapshot())
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			return fmt.Errorf("%d of %d modules loaded on %d nodes (%d errors, last %v): %w", done, modules, want, c.errCount, c.lastErr, err)
		}
	}
}

// Steady waits briefly for the queue to go idle, then makes one pass over
// every Module, one after the other, with the queue's workers held off,
// and returns what the pass did.
func (c *Controller) Steady(ctx context.Context) (Phase, error) {
	// Let the rollout's last passes end: a second without work, or at
	// most 5 s (on a shared API server, other nodes' changes queue passes
	// all the time; they are held off below anyway).
	idle := 0
	for deadline := time.Now().Add(5 * time.Second); idle < 10 && time.Now().Before(deadline); {
		if c.queue.Len() == 0 && c.busy.Load() == 0 {
			idle++
		} else {
			idle = 0
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return Phase{}, err
		}
	}
	c.pause.Lock()
	defer c.pause.Unlock()
	m := c.Mark()
	var errs []error
	for _, o := range c.modInf.GetStore().List() {
		key, err := cache.MetaNamespaceKeyFunc(o)
		if err != nil {
			continue
		}
		if _, err := c.reconcile(ctx, key); err != nil {
			errs = append(errs, err)
		}
	}
	return c.Since(m), errors.Join(errs...)
}

// Errors returns how many passes failed, and the last error.
func (c *Controller) Errors() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errCount, c.lastErr
}

// Memory is the Controller process's memory.
type Memory struct {
	// PeakRSS is VmHWM of /proc/self/status, in bytes.
	PeakRSS uint64
	// PeakHeap is the largest HeapAlloc sampled (every 200 ms), HeapAlloc
	// and HeapInuse now, after a GC.
	PeakHeap, HeapAlloc, HeapInuse uint64
	// GCs is the number of collections so far, GCCPU the share of the
	// process's CPU they took.
	GCs   uint32
	GCCPU float64
	// GOGC and MemoryLimit are the collector's settings (GOGC -1: off;
	// MemoryLimit math.MaxInt64: none), as the environment gave them.
	GOGC        int
	MemoryLimit int64
}

// Mem reads the process's memory. Only meaningful when the Controller has
// the process to itself (hack/benchfleet runs it in a child).
func (c *Controller) Mem() Memory {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	c.notePeak(ms.HeapAlloc)
	gogc := debug.SetGCPercent(-1)
	debug.SetGCPercent(gogc)
	return Memory{PeakRSS: vmHWM(), PeakHeap: c.peakHeap.Load(), HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse,
		GCs: ms.NumGC, GCCPU: ms.GCCPUFraction, GOGC: gogc, MemoryLimit: debug.SetMemoryLimit(-1)}
}

func (c *Controller) sampleHeap(ctx context.Context) {
	for sleep(ctx, 200*time.Millisecond) == nil {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		c.notePeak(ms.HeapAlloc)
	}
}

func (c *Controller) notePeak(v uint64) {
	for {
		old := c.peakHeap.Load()
		if v <= old || c.peakHeap.CompareAndSwap(old, v) {
			return
		}
	}
}

// vmHWM is the process's peak resident set size, 0 when unknown.
func vmHWM() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := bytes.CutPrefix(s.Bytes(), []byte("VmHWM:")); ok {
			f := bytes.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(string(f[0]), 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// defaultTransport is http.DefaultTransport with room for parallel checks
// (the registry.Client's own default is not exported).
func defaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	return t
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
