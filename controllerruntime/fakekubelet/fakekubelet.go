// Package fakekubelet plays the kubelet for kmmkit's worker Pods on an
// API server that has none (envtest, or a bare kube-apiserver in an
// operator's integration tests): it watches the worker Pods of an
// identity and finishes each one as a kubelet would report it — the
// worker loaded or unloaded the module, or it failed with a message —
// so that a test drives an operator to Loaded=True, or to WorkerFailed,
// without nodes.
//
//	k, err := fakekubelet.Start(ctx, clientset, fakekubelet.Options{Namespace: ns})
//	…
//	k.Wait(ctx, loader.ActionLoad, 1) // one load finished
//
// Nothing is loaded anywhere, of course: what the worker does on a real
// node is tested in package loader (in a VM).
package fakekubelet

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/loader"
)

// Options say which worker Pods to run and how they end.
type Options struct {
	// Namespace holds the worker Pods to run; "" means every namespace.
	Namespace string
	// Identity names the workers' owner kind; the zero value is KMM's
	// Module.
	Identity identity.Domain
	// Fail, when set, decides which workers fail: a non-empty message
	// makes the worker exit with code 1 and that message (as the worker
	// writes its error to the termination log), and the Pod stay running
	// for its restart. Every other worker succeeds.
	Fail func(pod *corev1.Pod) string
}

// Kubelet finishes worker Pods until its context ends.
type Kubelet struct {
	cs   kubernetes.Interface
	o    Options
	mu   sync.Mutex
	cond *sync.Cond
	runs map[loader.Action]int
	fail int
	ran  []*corev1.Pod
	errs []error
}

// Start starts a Kubelet that runs until ctx ends, and returns once it
// has seen the Pods that exist.
func Start(ctx context.Context, cs kubernetes.Interface, o Options) (*Kubelet, error) {
	k := &Kubelet{cs: cs, o: o, runs: map[loader.Action]int{}}
	k.cond = sync.NewCond(&k.mu)
	// The action label is the domain's; the name label is the kind's.
	id := o.Identity.Owner("", "x")
	sel := labels.NewSelector()
	for _, key := range []string{id.ActionLabel(), id.NameLabel()} {
		req, err := labels.NewRequirement(key, selection.Exists, nil)
		if err != nil {
			return nil, fmt.Errorf("fakekubelet: %w", err)
		}
		sel = sel.Add(*req)
	}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(o.Namespace),
		informers.WithTweakListOptions(func(l *metav1.ListOptions) { l.LabelSelector = sel.String() }))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.run(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.run(ctx, obj) },
	}); err != nil {
		return nil, fmt.Errorf("fakekubelet: %w", err)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("fakekubelet: the Pod informer never synced: %w", ctx.Err())
	}
	return k, nil
}

// run finishes one worker Pod that is scheduled and not finished yet.
func (k *Kubelet) run(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.DeletionTimestamp != nil || pod.Spec.NodeName == "" || done(pod) {
		return
	}
	action := loader.Action(pod.Labels[k.o.Identity.Owner("", "x").ActionLabel()])
	msg := ""
	if k.o.Fail != nil {
		msg = k.o.Fail(pod)
	}
	pod = pod.DeepCopy()
	now := metav1.NewTime(time.Now())
	var st corev1.ContainerStatus
	if len(pod.Spec.Containers) > 0 {
		st.Name, st.Image = pod.Spec.Containers[0].Name, pod.Spec.Containers[0].Image
	}
	if msg == "" {
		pod.Status.Phase = corev1.PodSucceeded
		st.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: now}
	} else {
		pod.Status.Phase = corev1.PodRunning
		st.RestartCount = 1
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
		st.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: msg, FinishedAt: now}
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{st}
	_, err := k.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		k.ran = append(k.ran, pod)
	}
	switch {
	case err == nil && msg == "":
		k.runs[action]++
	case err == nil:
		k.fail++
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err) || ctx.Err() != nil:
		// Gone, or changed since: the informer brings the new version.
	default:
		k.errs = append(k.errs, fmt.Errorf("finishing pod %s/%s: %w", pod.Namespace, pod.Name, err))
	}
	k.cond.Broadcast()
}

// done reports whether pod has been finished (by a kubelet or by us).
func done(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return true
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.LastTerminationState.Terminated != nil {
			return true
		}
	}
	return false
}

// Runs returns how many workers doing action (loader.ActionLoad,
// loader.ActionUnload) finished successfully.
func (k *Kubelet) Runs(action loader.Action) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.runs[action]
}

// Pods returns the worker Pods it finished, in order, as they were then
// (kmmkit deletes a finished worker once it has read it).
func (k *Kubelet) Pods() []*corev1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*corev1.Pod, len(k.ran))
	for i, p := range k.ran {
		out[i] = p.DeepCopy()
	}
	return out
}

// Failures returns how many workers Options.Fail made fail.
func (k *Kubelet) Failures() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fail
}

// Wait blocks until at least n workers doing action finished, and fails
// when ctx ends first or the API server refused to finish a Pod.
func (k *Kubelet) Wait(ctx context.Context, action loader.Action, n int) error {
	stop := context.AfterFunc(ctx, func() {
		k.mu.Lock()
		k.cond.Broadcast()
		k.mu.Unlock()
	})
	defer stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	for k.runs[action] < n {
		if len(k.errs) > 0 {
			return k.errs[0]
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fakekubelet: %d of %d %s worker(s) finished: %w", k.runs[action], n, action, ctx.Err())
		}
		k.cond.Wait()
	}
	return nil
}
