package kmmtest

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

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

// Reconcile runs one pass of the current Reconciler on the stored Module,
// and removes it once a deletion has released its finalizers.
func (h *Harness) Reconcile(ctx context.Context, ns, name string) (kmm.Result, error) {
	m, err := h.Modules.Get(ctx, ns, name)
	if err != nil {
		return kmm.Result{}, err
	}
	res, err := h.reconciler.Reconcile(ctx, m)
	if m.DeletionTimestamp != nil {
		if cur, gerr := h.Modules.Get(ctx, ns, name); gerr == nil && len(cur.Finalizers) == 0 {
			_ = h.Dynamic.Resource(kmm.ModuleGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
		}
	}
	return res, err
}

// ReconcileUntilStable reconciles the Module until a pass asks for no
// quick requeue (a requeue of a minute or more counts as stable), at most
// max passes.
func (h *Harness) ReconcileUntilStable(ctx context.Context, ns, name string, max int) (kmm.Result, error) {
	return settle(max, fmt.Sprintf("module %s/%s", ns, name), func() (kmm.Result, error) {
		return h.Reconcile(ctx, ns, name)
	})
}
