// Package kmmtest is a ready harness for unit tests of code that embeds
// kmmkit: a kmm.Reconciler wired to fakes — client-go's fake clientset
// with nodes of given kernels, a scriptable registry, builder, signer and
// node loader — and helpers to create Modules, reconcile them to a steady
// state and read what happened. Nothing touches a cluster or the network.
//
// Every failure a user meets can be scripted, with the reason the real
// component reports: a registry that refuses credentials, fails TLS or is
// unreachable (FailImage), a build that fails (Builder.Fail), signing
// that fails (Signer.Fail), a worker that fails on one node
// (Loader.Fail), a loader that cannot sync at all (Loader.FailSync).
// Writes lists what a pass wrote to the cluster.
package kmmtest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/kmmkit/kmmkit/builder"
	builderfake "github.com/kmmkit/kmmkit/builder/fake"
	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	loaderfake "github.com/kmmkit/kmmkit/loader/fake"
	"github.com/kmmkit/kmmkit/reason"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
)

// Harness is a Reconciler on fakes. Its fields are the fakes, for tests
// to script and inspect.
type Harness struct {
	Clientset  *k8sfake.Clientset
	Dynamic    *dynfake.FakeDynamicClient
	Modules    kmm.ModuleClient
	Registry   *registryfake.Checker
	Builder    *builderfake.Builder
	Signer     *Signer
	Loader     *loaderfake.NodeLoader
	Recorder   *record.FakeRecorder
	Reconciler *kmm.Reconciler

	events []string
	opts   []kmm.Option
}

// New returns a Harness whose builds succeed on the second pass and push
// the image into the fake registry, and whose loads succeed at once. opts
// are added to the Reconciler's (WithMetrics, WithClock, …).
func New(opts ...kmm.Option) (*Harness, error) {
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	h := &Harness{
		Clientset: k8sfake.NewClientset(),
		Dynamic:   dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{kmm.ModuleGVR: "ModuleList"}),
		Registry:  registryfake.New(),
		Builder:   builderfake.New(),
		Loader:    loaderfake.NewNodeLoader(),
		Recorder:  record.NewFakeRecorder(10000),
	}
	h.Modules = kmm.NewModuleClient(h.Dynamic)
	h.Signer = &Signer{registry: h.Registry}
	h.Builder.OnSucceed(func(r builder.Request) { h.Registry.SetExists(r.Image, digestOf(r.Image)) })
	h.opts = opts
	if err := h.Restart(); err != nil {
		return nil, err
	}
	return h, nil
}

// RestartWith adds Reconciler options (a loader.PodLoader on Clientset,
// say) and restarts.
func (h *Harness) RestartWith(opts ...kmm.Option) error {
	h.opts = append(h.opts, opts...)
	return h.Restart()
}

// Restart replaces the Reconciler with a new one on the same fakes, as a
// controller restart does: in-memory state is lost, the cluster's stays.
func (h *Harness) Restart() error {
	base := []kmm.Option{
		kmm.WithModuleClient(h.Modules), kmm.WithImageChecker(h.Registry), kmm.WithBuilder(h.Builder),
		kmm.WithSigner(h.Signer), kmm.WithNodeLoader(h.Loader), kmm.WithEventRecorder(h.Recorder),
	}
	r, err := kmm.NewReconciler(h.Clientset, append(base, h.opts...)...)
	if err != nil {
		return err
	}
	h.Reconciler = r
	return nil
}

// AddNode adds a node with a kernel, labels and a boot ID.
func (h *Harness) AddNode(ctx context.Context, name, kernel string, labels map[string]string) (*corev1.Node, error) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KernelVersion: kernel, BootID: name + "-boot-1"}}}
	return h.Clientset.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
}

// SetKernel changes a node's kernel (as after an upgrade and a reboot).
func (h *Harness) SetKernel(ctx context.Context, name, kernel string) error {
	n, err := h.Clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	n.Status.NodeInfo.KernelVersion = kernel
	n.Status.NodeInfo.BootID += "+"
	_, err = h.Clientset.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	h.Loader.Reboot(name)
	return err
}

// CreateModule stores a Module.
func (h *Harness) CreateModule(ctx context.Context, m *v1beta1.Module) error {
	_, err := h.Modules.Create(ctx, m)
	return err
}

// Module reads a Module back.
func (h *Harness) Module(ctx context.Context, ns, name string) (*v1beta1.Module, error) {
	return h.Modules.Get(ctx, ns, name)
}

// DeleteModule marks a Module deleted as the API server does while a
// finalizer holds it; Reconcile finishes the deletion.
func (h *Harness) DeleteModule(ctx context.Context, ns, name string) error {
	m, err := h.Modules.Get(ctx, ns, name)
	if err != nil {
		return err
	}
	if len(m.Finalizers) == 0 {
		return h.Dynamic.Resource(kmm.ModuleGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
	}
	now := metav1.Now()
	m.DeletionTimestamp = &now
	_, err = h.Modules.Update(ctx, m)
	return err
}

// Reconcile runs one pass on the stored Module, and removes it once a
// deletion has released its finalizers.
func (h *Harness) Reconcile(ctx context.Context, ns, name string) (kmm.Result, error) {
	m, err := h.Modules.Get(ctx, ns, name)
	if err != nil {
		return kmm.Result{}, err
	}
	res, err := h.Reconciler.Reconcile(ctx, m)
	if m.DeletionTimestamp != nil {
		if cur, gerr := h.Modules.Get(ctx, ns, name); gerr == nil && len(cur.Finalizers) == 0 {
			_ = h.Dynamic.Resource(kmm.ModuleGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
		}
	}
	return res, err
}

// ReconcileUntilStable reconciles until a pass asks for no quick requeue
// (a requeue of a minute or more counts as stable), at most max passes.
func (h *Harness) ReconcileUntilStable(ctx context.Context, ns, name string, max int) (kmm.Result, error) {
	var res kmm.Result
	var err error
	for i := 0; i < max; i++ {
		res, err = h.Reconcile(ctx, ns, name)
		if err != nil {
			return res, err
		}
		if res.Done || res.RequeueAfter == 0 || res.RequeueAfter >= time.Minute {
			return res, nil
		}
	}
	return res, fmt.Errorf("module %s/%s not stable after %d passes (requeue %s)", ns, name, max, res.RequeueAfter)
}

// RegistryError is a registry failure that carries a reason, as the
// registry package's errors do (it implements reason.Carrier). Script it
// with FailImage, or Registry.SetError for other errors.
type RegistryError struct {
	// Reason is what the registry answered: reason.Unauthorized,
	// reason.TLSError, reason.RegistryUnavailable, reason.RegistryError, …
	Reason reason.Reason
	// Image is the image that was checked.
	Image string
	// Detail says more (which pull secret, which certificate).
	Detail string
}

// Error implements error.
func (e *RegistryError) Error() string {
	msg := e.Image + ": " + string(e.Reason)
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// ReasonOf implements reason.Carrier.
func (e *RegistryError) ReasonOf() reason.Reason { return e.Reason }

// FailImage makes every registry check of image fail with r and detail,
// until Registry.SetExists or SetMissing is called for it.
func (h *Harness) FailImage(image string, r reason.Reason, detail string) {
	h.Registry.SetError(image, &RegistryError{Reason: r, Image: image, Detail: detail})
}

// Writes returns every write made so far through Clientset and Dynamic,
// in order, as "verb resource namespace/name" ("update modules/status
// drivers/nic", say): compare it before and after a pass to prove what
// the pass changed.
func (h *Harness) Writes() []string {
	var out []string
	for _, acts := range [][]k8stesting.Action{h.Clientset.Actions(), h.Dynamic.Actions()} {
		for _, a := range acts {
			switch a.GetVerb() {
			case "create", "update", "patch", "delete", "delete-collection":
			default:
				continue
			}
			res := a.GetResource().Resource
			if sub := a.GetSubresource(); sub != "" {
				res += "/" + sub
			}
			name := ""
			switch a := a.(type) {
			case k8stesting.CreateAction:
				if o, err := meta.Accessor(a.GetObject()); err == nil {
					name = o.GetName()
				}
			case k8stesting.UpdateAction:
				if o, err := meta.Accessor(a.GetObject()); err == nil {
					name = o.GetName()
				}
			case k8stesting.PatchAction:
				name = a.GetName()
			case k8stesting.DeleteAction:
				name = a.GetName()
			}
			out = append(out, fmt.Sprintf("%s %s %s/%s", a.GetVerb(), res, a.GetNamespace(), name))
		}
	}
	return out
}

// Events returns the events emitted so far ("Type Reason message").
func (h *Harness) Events() []string {
	for {
		select {
		case e := <-h.Recorder.Events:
			h.events = append(h.events, e)
		default:
			return append([]string(nil), h.events...)
		}
	}
}

// Signer is a fake kmm.ImageSigner: it records requests and makes the
// signed image exist in the fake registry, or fails where told.
type Signer struct {
	mu       sync.Mutex
	registry *registryfake.Checker
	requests []sign.Request
	fail     map[string]error
}

// Fail makes signing into image fail with err (nil: succeed again).
func (s *Signer) Fail(image string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail == nil {
		s.fail = map[string]error{}
	}
	if err == nil {
		delete(s.fail, image)
		return
	}
	s.fail[image] = err
}

// Requests returns the signing requests so far.
func (s *Signer) Requests() []sign.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sign.Request(nil), s.requests...)
}

// Sign implements kmm.ImageSigner.
func (s *Signer) Sign(ctx context.Context, req sign.Request) (sign.Result, error) {
	if err := ctx.Err(); err != nil {
		return sign.Result{}, err
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	err := s.fail[req.To.Image]
	s.mu.Unlock()
	if err != nil {
		return sign.Result{}, err
	}
	if req.From.Image == req.To.Image {
		return sign.Result{}, errors.New("sign: unsigned and signed image are the same")
	}
	d := digestOf(req.To.Image + "+signed")
	s.registry.SetExists(req.To.Image, d)
	files := append([]string(nil), req.FilesToSign...)
	sort.Strings(files)
	return sign.Result{Digest: d, Signed: files}, nil
}
