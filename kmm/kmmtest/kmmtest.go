// Package kmmtest is a ready harness for unit tests of code that embeds
// kmmkit: a kmm.Reconciler wired to fakes — client-go's fake clientset
// with nodes of given kernels, a scriptable registry, builder, signer and
// node loader — and helpers to create owners, reconcile them to a steady
// state and read what happened. Nothing touches a cluster or the network.
//
// It settles KMM's own Modules (CreateModule, ReconcileUntilStable) and
// any embedding operator's resource: give NewOwners how to read the
// resource, what kmm.Object it stands for and how to write its status,
// and the owner's identity, and it drives ReconcileSpec exactly as the
// operator's controller would (see the NICDriver example).
//
// Every failure a user meets can be scripted, with the reason the real
// component reports: a registry that refuses credentials, fails TLS or is
// unreachable (FailImage), a build that fails (Builder.Fail), signing
// that fails (Signer.Fail), a worker that fails on one node
// (Loader.Fail), a loader that cannot sync at all (Loader.FailSync).
// Writes lists what a pass wrote to the cluster. Each fake is also
// usable on its own, from its package: registry/fake, builder/fake,
// builder/sign/fake and loader/fake.
package kmmtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
	signfake "github.com/kmmkit/kmmkit/builder/sign/fake"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	loaderfake "github.com/kmmkit/kmmkit/loader/fake"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
)

// Signer is the fake image signer of package builder/sign/fake.
type Signer = signfake.Signer

// Harness is a Reconciler on fakes. Its fields are the fakes, for tests
// to script and inspect.
type Harness struct {
	Clientset *k8sfake.Clientset
	Dynamic   *dynfake.FakeDynamicClient
	Modules   kmm.ModuleClient
	Registry  *registryfake.Checker
	Builder   *builderfake.Builder
	Signer    *Signer
	Loader    *loaderfake.NodeLoader
	Recorder  *record.FakeRecorder

	reconciler *kmm.Reconciler
	events     []string
	opts       []kmm.Option
	// owners rebuild the Reconcilers of NewOwners on a restart.
	owners []func() error
}

// New returns a Harness whose builds succeed on the second pass and push
// the image into the fake registry, whose signing makes the signed image
// exist there, and whose loads succeed at once. opts are added to the
// Reconciler's (WithMetrics, WithClock, WithIdentity, …).
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
		Signer:    signfake.New(),
		Loader:    loaderfake.NewNodeLoader(),
		Recorder:  record.NewFakeRecorder(10000),
	}
	h.Modules = kmm.NewModuleClient(h.Dynamic)
	h.Builder.OnSucceed(func(r builder.Request) { h.Registry.SetExists(r.Image, digestOf(r.Image)) })
	h.Signer.OnSign(func(req sign.Request, res sign.Result) { h.Registry.SetExists(req.To.Image, res.Digest) })
	h.opts = opts
	if _, err := h.Restart(); err != nil {
		return nil, err
	}
	return h, nil
}

// Reconciler returns the current Reconciler: the one the last Restart
// made.
func (h *Harness) Reconciler() *kmm.Reconciler { return h.reconciler }

// RestartWith adds Reconciler options (a loader.PodLoader on Clientset,
// say), restarts, and returns the new Reconciler.
func (h *Harness) RestartWith(opts ...kmm.Option) (*kmm.Reconciler, error) {
	h.opts = append(h.opts, opts...)
	return h.Restart()
}

// Restart replaces the Reconciler, and those of every NewOwners, with new
// ones on the same fakes, as a controller restart does: in-memory state
// is lost, the cluster's stays. It returns the harness's new Reconciler.
func (h *Harness) Restart() (*kmm.Reconciler, error) {
	r, err := h.newReconciler()
	if err != nil {
		return nil, err
	}
	h.reconciler = r
	for _, rebuild := range h.owners {
		if err := rebuild(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// newReconciler builds a Reconciler on the fakes with the harness's
// options and then extra.
func (h *Harness) newReconciler(extra ...kmm.Option) (*kmm.Reconciler, error) {
	opts := []kmm.Option{
		kmm.WithModuleClient(h.Modules), kmm.WithImageChecker(h.Registry), kmm.WithBuilder(h.Builder),
		kmm.WithSigner(h.Signer), kmm.WithNodeLoader(h.Loader), kmm.WithEventRecorder(h.Recorder),
	}
	opts = append(append(opts, h.opts...), extra...)
	return kmm.NewReconciler(h.Clientset, opts...)
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

// settle runs pass until it asks for no quick requeue (a requeue of a
// minute or more counts as stable) or reports Done, at most max times.
func settle(max int, what string, pass func() (kmm.Result, error)) (kmm.Result, error) {
	var res kmm.Result
	var err error
	for i := 0; i < max; i++ {
		res, err = pass()
		if err != nil {
			return res, err
		}
		if res.Done || res.RequeueAfter == 0 || res.RequeueAfter >= time.Minute {
			return res, nil
		}
	}
	return res, fmt.Errorf("%s not stable after %d passes (requeue %s)", what, max, res.RequeueAfter)
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

// digestOf is a stable fake digest for an image.
func digestOf(image string) string {
	sum := sha256.Sum256([]byte(image))
	return "sha256:" + hex.EncodeToString(sum[:])
}
