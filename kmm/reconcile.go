package kmm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

// Reconcile makes one level-triggered pass over a Module: it holds the
// Module with Finalizer, drives images and loading (ReconcileSpec), writes
// the status when it changed, and drops the finalizer once a deleted
// Module is unloaded everywhere. It needs WithModuleClient. A second pass
// with nothing changed writes nothing.
func (r *Reconciler) Reconcile(ctx context.Context, m *v1beta1.Module) (Result, error) {
	if r.modules == nil {
		return Result{}, errors.New("kmm: Reconcile needs WithModuleClient; embedders use ReconcileSpec")
	}
	m = m.DeepCopy()
	deleting := m.DeletionTimestamp != nil
	if deleting && !slices.Contains(m.Finalizers, Finalizer) {
		return Result{Done: true}, nil
	}
	if !deleting && !slices.Contains(m.Finalizers, Finalizer) {
		m.Finalizers = append(m.Finalizers, Finalizer)
		updated, err := r.modules.Update(ctx, m)
		if err != nil {
			return Result{}, fmt.Errorf("adding the finalizer to module %s/%s: %w", m.Namespace, m.Name, err)
		}
		m = updated
	}
	obj := Object{
		Namespace: m.Namespace, Name: m.Name, Spec: m.Spec, Status: m.Status, Generation: m.Generation, Deleting: deleting,
		Owner: &metav1.OwnerReference{APIVersion: v1beta1.SchemeGroupVersion.String(), Kind: v1beta1.Kind, Name: m.Name, UID: m.UID},
		Ref:   &corev1.ObjectReference{APIVersion: v1beta1.SchemeGroupVersion.String(), Kind: v1beta1.Kind, Namespace: m.Namespace, Name: m.Name, UID: m.UID},
	}
	if deleting {
		ns, err := r.client.CoreV1().Namespaces().Get(ctx, m.Namespace, metav1.GetOptions{})
		obj.NamespaceTerminating = err == nil && (ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating)
	}
	res, err := r.ReconcileSpec(ctx, obj)
	if !equality.Semantic.DeepEqual(m.Status, res.Status) {
		m.Status = res.Status
		updated, uerr := r.modules.UpdateStatus(ctx, m)
		if apierrors.IsConflict(uerr) {
			// Our copy was stale (an informer cache, say): write the
			// status on the latest object instead.
			if latest, gerr := r.modules.Get(ctx, m.Namespace, m.Name); gerr == nil {
				latest.Status = res.Status
				updated, uerr = r.modules.UpdateStatus(ctx, latest)
			}
		}
		if uerr != nil {
			return res, errors.Join(err, fmt.Errorf("writing the status of module %s/%s: %w", m.Namespace, m.Name, uerr))
		}
		m = updated
	}
	if res.Done && slices.Contains(m.Finalizers, Finalizer) {
		m.Finalizers = slices.DeleteFunc(m.Finalizers, func(f string) bool { return f == Finalizer })
		if _, uerr := r.modules.Update(ctx, m); uerr != nil && !apierrors.IsNotFound(uerr) {
			return res, errors.Join(err, fmt.Errorf("removing the finalizer of module %s/%s: %w", m.Namespace, m.Name, uerr))
		}
	}
	return res, err
}

// ReconcileSpec makes one pass for an Object and returns the new status;
// the caller writes it and handles its finalizer (Result.Done). This is
// the entry point for operators that embed a ModuleSpec in their own
// resource.
func (r *Reconciler) ReconcileSpec(ctx context.Context, obj Object) (res Result, err error) {
	start := r.now()
	defer func() { r.metrics.reconciled(obj, res, err, r.now().Sub(start)) }()
	if err := r.checkObject(obj); err != nil {
		return Result{}, err
	}
	nodes, err := r.nodes(ctx)
	if err != nil {
		return Result{Status: obj.Status}, err
	}
	if obj.Deleting {
		return r.finalize(ctx, obj, nodes)
	}
	if obj.Spec.ModuleLoader == nil {
		// Nothing to load (device plugin or DRA only): unload what a
		// previous spec loaded.
		res.Status = *obj.Status.DeepCopy()
		res.Status.ModuleLoader, res.Status.Kernels = nil, nil
		_, err := r.loader.Sync(ctx, r.syncRequest(obj, nodes))
		return res, err
	}
	t := r.target(obj, nodes)
	auth, authErr := r.auth(ctx, obj)
	verifyAll := !equalTrigger(obj.Spec.ImageRebuildTriggerGeneration, obj.Status.ImageRebuildTriggerGeneration)

	// Map every kernel, and gather the distinct images.
	kernels := t.kernels()
	recs := map[string]*kernelmap.Record{}
	kstat := map[string]*v1beta1.KernelStatus{}
	images := map[string]*imageWork{}
	var order []string
	for _, k := range kernels {
		ks := &v1beta1.KernelStatus{Kernel: k, Nodes: int32(len(t.byKernel[k]))}
		kstat[k] = ks
		rec, err := r.mapper.ResolveSpec(obj.Name, obj.podNamespace(), &obj.Spec, k)
		switch {
		case errors.Is(err, kernelmap.ErrNoMapping):
			ks.State, ks.Message = StateNoMapping, "no kernel mapping matches this kernel"
			continue
		case err != nil:
			ks.State, ks.Message = StateMapFailed, err.Error()
			continue
		}
		recs[k] = rec
		ks.Image = rec.Image()
		if _, ok := images[rec.Image()]; !ok {
			images[rec.Image()] = &imageWork{image: rec.Image(), rec: rec}
			order = append(order, rec.Image())
		}
	}
	// Registry work is per distinct image, never per node.
	for _, img := range order {
		w := images[img]
		if authErr != nil {
			w.state, w.message, w.requeue = StateCheckFailed, authErr.Error(), time.Minute
		} else {
			r.ensureImage(ctx, obj, w, auth, verifyAll || r.dueForVerify(img))
		}
		res.requeue(w.requeue)
	}

	// Load where the image is ready; elsewhere keep what is loaded.
	desired := map[string]*loader.PodRequest{}
	keep := t.keep
	for _, k := range kernels {
		rec, ok := recs[k]
		if !ok {
			continue
		}
		w := images[rec.Image()]
		ks := kstat[k]
		ks.State, ks.Digest, ks.Build, ks.Message = w.state, w.digest, w.build, w.message
		if w.state == StateReady {
			ks.Build = "" // only while a build matters
		}
		for _, n := range t.byKernel[k] {
			if w.state != StateReady {
				keep[n.Name] = true
				continue
			}
			desired[n.Name] = &loader.PodRequest{
				Config:             moduleConfig(rec),
				ServiceAccountName: obj.Spec.ModuleLoader.ServiceAccountName,
				ImageRepoSecret:    rec.ImageRepoSecret(),
				Tolerations:        obj.Spec.Tolerations,
				ModuleVersion:      rec.ModuleVersion(),
			}
		}
	}
	sreq := r.syncRequest(obj, nodes)
	sreq.Desired, sreq.Keep = desired, keep
	states, lerr := r.loader.Sync(ctx, sreq)
	for _, s := range states {
		res.requeue(s.RequeueAfter)
	}
	res.Status = r.status(obj, t, kernels, kstat, desired, states)
	if verifyAll {
		res.Status.ImageRebuildTriggerGeneration = obj.Spec.ImageRebuildTriggerGeneration
	}
	made := map[string]string{}
	for img, w := range images {
		if w.done != "" {
			made[img] = w.done
		}
	}
	r.events(obj, res.Status, made)
	return res, lerr
}

// moduleConfig is what the worker loads for a record: KMM's
// NodeModulesConfig config.
func moduleConfig(rec *kernelmap.Record) v1beta1.ModuleConfig {
	tls := rec.RegistryTLS()
	return v1beta1.ModuleConfig{
		KernelVersion:         rec.Kernel().Version,
		ContainerImage:        rec.Image(),
		ImagePullPolicy:       rec.ImagePullPolicy(),
		InsecurePull:          tls.Insecure || tls.InsecureSkipTLSVerify,
		InTreeModulesToRemove: rec.InTreeModulesToRemove(),
		Modprobe:              rec.Modprobe(),
	}
}

// auth reads the Module's imageRepoSecret once per pass.
func (r *Reconciler) auth(ctx context.Context, obj Object) (registry.AuthInfo, error) {
	s := obj.Spec.ImageRepoSecret
	if s == nil || s.Name == "" {
		return registry.AuthInfo{}, nil
	}
	return registry.SecretKeychain(ctx, r.client, obj.podNamespace(), s.Name)
}

// dueForVerify reports whether image should be asked from the registry
// rather than the checker's cache, and notes that it will be.
func (r *Reconciler) dueForVerify(image string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.verified == nil {
		r.verified = map[string]time.Time{}
	}
	now := r.now()
	last, ok := r.verified[image]
	if ok && now.Sub(last) < r.verifyEvery {
		return false
	}
	r.verified[image] = now
	return ok // the first check of an image may use the cache
}

func equalTrigger(a, b *int) bool {
	return ptr.Deref(a, 0) == ptr.Deref(b, 0)
}

// finalize unloads the module from every node. When the namespace is
// being deleted, worker Pods cannot be created any more, so it gives up
// with a warning instead of holding the Module forever (KMM deadlocks).
func (r *Reconciler) finalize(ctx context.Context, obj Object, nodes []*corev1.Node) (Result, error) {
	res := Result{Status: *obj.Status.DeepCopy()}
	if obj.NamespaceTerminating {
		r.event(obj, corev1.EventTypeWarning, "UnloadSkipped",
			"namespace %s is being deleted, so no worker can unload the module; it stays loaded until the nodes reboot", obj.podNamespace())
		res.Done = true
		return res, nil
	}
	states, err := r.loader.Sync(ctx, r.syncRequest(obj, nodes))
	var pending []string
	for _, s := range states {
		if s.Phase != loader.PhaseUnloaded {
			pending = append(pending, s.Node)
		}
		res.requeue(s.RequeueAfter)
	}
	sort.Strings(pending)
	cond := metav1.Condition{Type: ConditionLoaded, Status: metav1.ConditionFalse, Reason: "Unloading",
		Message: fmt.Sprintf("unloading from %d node(s): %s", len(pending), summarize(pending, 10)), ObservedGeneration: obj.Generation}
	if len(pending) == 0 {
		cond.Reason, cond.Message = "Unloaded", "unloaded from every node"
		res.Done = err == nil
	} else {
		res.requeue(5 * time.Second)
	}
	setCondition(&res.Status.Conditions, cond, r.now())
	return res, err
}
