package loader_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
)

// delayedStore is an informer cache that lags: the informer's handlers
// pass each event on to the store only after a random delay, in order, as
// an informer under load or a slow watch would.
type delayedStore struct{ cache.Store }

func newDelayedStore(ctx context.Context, inf cache.SharedIndexInformer, minDelay, maxDelay time.Duration, seed uint64) *delayedStore {
	d := &delayedStore{Store: cache.NewStore(cache.MetaNamespaceKeyFunc)}
	rnd := rand.New(rand.NewPCG(seed, 1))
	type due struct {
		at    time.Time
		apply func()
	}
	queue := make(chan due, 100000)
	push := func(apply func()) {
		queue <- due{time.Now().Add(minDelay + time.Duration(rnd.Int64N(int64(maxDelay-minDelay)))), apply}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { push(func() { _ = d.Add(obj) }) },
		UpdateFunc: func(_, obj any) { push(func() { _ = d.Update(obj) }) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			push(func() { _ = d.Delete(obj) })
		},
	})
	go func() {
		last := time.Time{}
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-queue:
				// In order: an event never overtakes an earlier one.
				if e.at.Before(last) {
					e.at = last
				}
				last = e.at
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(e.at)):
				}
				e.apply()
			}
		}
	}()
	return d
}

// TestPodLoaderLaggingInformersAPIServer drives load, a config change, a
// reboot and unload on the real kube-apiserver, with the node and Pod
// views coming from real informers whose caches lag 100-500ms behind,
// while passes run every 25ms, as a busy operator's would. An undelayed
// watch records every worker Pod created and every change of the .ready
// label: they are exactly those of the state machine, never one more.
func TestPodLoaderLaggingInformersAPIServer(t *testing.T) {
	cs, err := kubernetes.NewForConfig(testenv.RESTConfig(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("%d", rand.Uint32())
	ns := "kmmkit-lag-" + run
	testenv.Namespace(t, cs, ns)
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kmm-worker"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	n1, n2 := "lag-"+run+"-n1", "lag-"+run+"-n2"
	for _, n := range []string{n1, n2} {
		testenv.ReadyNode(t, cs, n, map[string]string{"kmmkit-run": run}, kernel1, "boot-1")
	}
	ready := loader.ReadyLabel(ns, "nic")

	// The views: informers with delayed handlers.
	nodeInf := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "kmmkit-run=" + run })).Core().V1().Nodes().Informer()
	podInf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = loader.LabelWorkerAction })).Core().V1().Pods().Informer()
	nodeView := newDelayedStore(ctx, nodeInf, 100*time.Millisecond, 500*time.Millisecond, 1)
	podView := newDelayedStore(ctx, podInf, 100*time.Millisecond, 500*time.Millisecond, 2)

	// The truth: what was created and how the label changed, undelayed.
	var mu sync.Mutex
	creates := map[string][]string{}
	readyLog := map[string][]bool{}
	seenPods := map[string]bool{}
	truthPods := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns)).Core().V1().Pods().Informer()
	_, _ = truthPods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		p := obj.(*corev1.Pod)
		cfg, err := v1beta1.DecodeModuleConfig([]byte(p.Annotations[loader.AnnotationWorkerConfig]))
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !seenPods[string(p.UID)] {
			seenPods[string(p.UID)] = true
			creates[p.Spec.NodeName] = append(creates[p.Spec.NodeName], p.Labels[loader.LabelWorkerAction]+" "+cfg.ContainerImage)
		}
	}})
	truthNodes := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "kmmkit-run=" + run })).Core().V1().Nodes().Informer()
	noteReady := func(obj any) {
		n := obj.(*corev1.Node)
		_, r := n.Labels[ready]
		mu.Lock()
		defer mu.Unlock()
		readyLog[n.Name] = noteChange(readyLog[n.Name], r)
	}
	_, _ = truthNodes.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: noteReady, UpdateFunc: func(_, obj any) { noteReady(obj) }})
	for _, inf := range []cache.SharedIndexInformer{nodeInf, podInf, truthPods, truthNodes} {
		go inf.Run(ctx.Done())
	}
	require.True(t, cache.WaitForCacheSync(ctx.Done(), nodeInf.HasSynced, podInf.HasSynced, truthPods.HasSynced, truthNodes.HasSynced))

	// The kubelet: workers succeed 100ms after they appear; Pods being
	// deleted go.
	go func() {
		for ctx.Err() == nil {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for i := range pods.Items {
					p := &pods.Items[i]
					switch {
					case p.DeletionTimestamp != nil:
						_ = cs.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
					case p.Status.Phase == "" || p.Status.Phase == corev1.PodPending:
						if time.Since(p.CreationTimestamp.Time) > 100*time.Millisecond {
							succeeded(&p.Status)
							_, _ = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
						}
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	l, err := loader.NewPodLoader(cs, "quay.io/kmmkit/kmm:v0.1", loader.WithStuckTimeout(0),
		loader.WithPodLister(func(_ context.Context, namespace string, sel labels.Selector) ([]*corev1.Pod, error) {
			var out []*corev1.Pod
			for _, o := range podView.List() {
				if p := o.(*corev1.Pod); p.Namespace == namespace && sel.Matches(labels.Set(p.Labels)) {
					out = append(out, p)
				}
			}
			return out, nil
		}))
	require.NoError(t, err)
	versions := map[string]string{}
	pass := func() {
		req := loader.SyncRequest{Namespace: ns, Module: "nic", Desired: map[string]*loader.PodRequest{}}
		for _, o := range nodeView.List() {
			n := o.(*corev1.Node)
			req.Nodes = append(req.Nodes, n)
			if v, ok := versions[n.Name]; ok {
				req.Desired[n.Name] = config(n, v)
			}
		}
		_, err := l.Sync(ctx, req)
		require.NoError(t, err)
	}
	// settled: every node has what is wanted, no worker is left, and it
	// stays so for longer than the views lag.
	settled := func() bool {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "kmmkit-run=" + run})
		require.NoError(t, err)
		for _, n := range nodes.Items {
			obs, _, err := loader.ObservedOn(&n, ns, "nic")
			require.NoError(t, err)
			v, want := versions[n.Name]
			_, r := n.Labels[ready]
			if want != (obs != nil) || r != want || want && obs.Version != v || want && obs.BootID != n.Status.NodeInfo.BootID {
				return false
			}
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		return len(pods.Items) == 0
	}
	phase := func(name string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		var since time.Time
		for time.Now().Before(deadline) {
			pass()
			if !settled() {
				since = time.Time{}
			} else if since.IsZero() {
				since = time.Now()
			} else if time.Since(since) > time.Second {
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
		t.Fatalf("%s: not settled after 60s", name)
	}

	versions[n1], versions[n2] = "1", "1"
	phase("load")
	versions[n1] = "2"
	phase("config change on n1")
	n, err := cs.CoreV1().Nodes().Get(ctx, n2, metav1.GetOptions{})
	require.NoError(t, err)
	n.Status.NodeInfo.BootID = "boot-2"
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	require.NoError(t, err)
	phase("reboot of n2")
	delete(versions, n1)
	delete(versions, n2)
	phase("unload")

	img := func(v string) string { return "registry.example.com/nic:" + kernel1 + "-" + v }
	assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(creates[n1]) >= 4 && len(creates[n2]) >= 3 && len(readyLog[n1]) >= 4 && len(readyLog[n2]) >= 4
	}, 5*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second) // anything late would show now
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string][]string{
		n1: {"Load " + img("1"), "Unload " + img("1"), "Load " + img("2"), "Unload " + img("2")},
		n2: {"Load " + img("1"), "Load " + img("1"), "Unload " + img("1")},
	}, creates, "exactly the worker Pods of the state machine")
	assert.Equal(t, map[string][]bool{n1: {true, false, true, false}, n2: {true, false, true, false}}, readyLog,
		"the .ready label never went back and forth")
}
