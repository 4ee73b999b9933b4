package kmm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
	"github.com/kmmkit/kmmkit/upgrade"
)

// Reconcile makes one level-triggered pass over a Module: it holds the
// Module with Finalizer, drives images and loading (ReconcileSpec), writes
// the status when it changed, and drops the finalizer once a deleted
// Module is unloaded everywhere. It needs WithModuleClient. A second pass
// with nothing changed writes nothing.
//
// The Module is checked with v1beta1.Validate first (every rule of KMM's
// admission webhook and CRD, metadata included). An invalid Module is not
// acted on, as ReconcileSpec describes; only its status is written, and it
// gets no finalizer while it is invalid (nothing has been loaded for it
// that a finalizer would wait for; a Module that was valid before has its
// finalizer already, and its deletion unloads as usual).
func (r *Reconciler) Reconcile(ctx context.Context, m *v1beta1.Module) (Result, error) {
	if r.modules == nil {
		return Result{Status: *m.Status.DeepCopy()}, errors.New("kmm: Reconcile needs WithModuleClient; embedders use ReconcileSpec")
	}
	m = m.DeepCopy()
	deleting := m.DeletionTimestamp != nil
	if deleting && !slices.Contains(m.Finalizers, Finalizer) {
		return Result{Status: m.Status, Done: true}, nil
	}
	invalid := v1beta1.Validate(m, r.validateOptions(ctx)...)
	if !deleting && len(invalid) == 0 && !slices.Contains(m.Finalizers, Finalizer) {
		m.Finalizers = append(m.Finalizers, Finalizer)
		updated, err := r.modules.Update(ctx, m)
		if err != nil {
			return Result{Status: m.Status}, fmt.Errorf("adding the finalizer to module %s/%s: %w", m.Namespace, m.Name, err)
		}
		m = updated
	}
	obj := Object{
		Namespace: m.Namespace, Name: m.Name, Spec: m.Spec, Status: m.Status, Generation: m.Generation, Deleting: deleting,
		Owner:    &metav1.OwnerReference{APIVersion: v1beta1.SchemeGroupVersion.String(), Kind: v1beta1.Kind, Name: m.Name, UID: m.UID},
		Ref:      &corev1.ObjectReference{APIVersion: v1beta1.SchemeGroupVersion.String(), Kind: v1beta1.Kind, Namespace: m.Namespace, Name: m.Name, UID: m.UID},
		SpecPath: field.NewPath("spec"),
	}
	if deleting {
		ns, err := r.client.CoreV1().Namespaces().Get(ctx, m.Namespace, metav1.GetOptions{})
		obj.NamespaceTerminating = err == nil && (ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating)
	}
	res, err := r.reconcile(ctx, obj, invalid)
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
//
// It checks obj.Spec with v1beta1.ValidateSpec at obj.SpecPath first, so
// an embedded spec with no admission webhook in front of it is held to
// KMM's rules all the same. An invalid spec changes nothing in the
// cluster: no build, no signing, no worker Pod, no node label or
// annotation, and nothing is unloaded: nodes that have the module from an
// earlier valid spec keep it as it is, as they would behind KMM's
// webhook, which refuses such an update. The status gets Valid=False and
// Degraded=True, both with reason.InvalidSpec and a message listing every
// error with its field path, and one Warning event InvalidSpec is emitted
// when the errors change; ImagesReady, Loaded, the counts and
// status.kernels stay as the last valid pass left them (their
// observedGeneration says which generation they describe). A deleting
// object is finished whatever its spec: unloading needs only what the
// nodes record.
//
// The Result is safe to write back even when err is not nil: its Status
// starts from obj.Status and changes only what the pass learned. When the
// nodes cannot be listed, it is obj.Status unchanged. When the loader
// fails before it reports every desired node, Loaded is Unknown with
// reason.LoaderFailed and AvailableNumber keeps its last value for the
// nodes it could not report; kernels, images and builds are this pass's.
// RequeueAfter is set as on success; Done is set only without error.
func (r *Reconciler) ReconcileSpec(ctx context.Context, obj Object) (Result, error) {
	return r.reconcile(ctx, obj, v1beta1.ValidateSpec(&obj.Spec, obj.specPath(), r.validateOptions(ctx)...))
}

// logger is the logger of a pass: WithLogger's, or the context's.
func (r *Reconciler) logger(ctx context.Context) logr.Logger { return r.log.From(ctx) }

// reconcile is one pass over obj, whose spec Validate found invalid
// errors in.
func (r *Reconciler) reconcile(ctx context.Context, obj Object, invalid field.ErrorList) (res Result, err error) {
	if err := r.checkObject(obj); err != nil {
		return Result{Status: *obj.Status.DeepCopy()}, err
	}
	log := r.logger(ctx).WithValues("namespace", obj.Namespace, "name", obj.Name)
	ctx = logr.NewContext(ctx, log)
	start := r.now()
	defer func() { r.metrics.reconciled(r.identity.String(), obj, res, err, r.now().Sub(start)) }()
	if len(invalid) > 0 && !obj.Deleting {
		log.V(1).Info("the spec is invalid: nothing is changed in the cluster", "errors", len(invalid), "first", invalid[0].Error())
		return r.invalid(obj, invalid), nil
	}
	nodes, err := r.nodes(ctx)
	if err != nil {
		return Result{Status: *obj.Status.DeepCopy()}, err
	}
	if obj.Deleting {
		log.V(1).Info("unloading for deletion", "nodes", len(nodes), "invalidSpec", len(invalid) > 0)
		return r.finalize(ctx, obj, nodes)
	}
	if obj.Spec.ModuleLoader == nil {
		// Nothing to load (device plugin or DRA only): unload what a
		// previous spec loaded.
		log.V(1).Info("no moduleLoader: unloading what an earlier spec loaded")
		res.Status = *obj.Status.DeepCopy()
		res.Status.ModuleLoader, res.Status.Kernels = nil, nil
		meta.RemoveStatusCondition(&res.Status.Conditions, ConditionImagesReady)
		meta.RemoveStatusCondition(&res.Status.Conditions, ConditionLoaded)
		setCondition(&res.Status.Conditions, validCondition(obj), r.now())
		states, err := r.loader.Sync(ctx, r.syncRequest(obj, nodes))
		for _, s := range states {
			res.requeue(s.RequeueAfter)
		}
		setCondition(&res.Status.Conditions, degradedCondition(obj, nodeProblems(states), 0, 0), r.now())
		dp, dperr := r.syncDevicePlugin(ctx, obj, nodes, r.devicePluginStops(obj, nodes))
		r.setDevicePlugin(&res.Status, dp)
		return res, errors.Join(err, dperr)
	}
	var versions *versionPass
	var verr error
	if obj.Spec.ModuleLoader.Container.Version != "" {
		// Ordered upgrade: step the version labels first; loading follows W.
		nodes, versions, verr = r.stepVersionLabels(ctx, obj, nodes, &res)
	}
	t := r.target(obj, nodes)
	kernels := t.kernels()
	log.V(1).Info("targeted nodes", "nodes", len(t.selected), "kernels", len(kernels), "kept", len(t.keep), "noKernel", len(t.noKernel))
	auth, authErr := r.auth(ctx, obj)
	verifyAll := !equalTrigger(obj.Spec.ImageRebuildTriggerGeneration, obj.Status.ImageRebuildTriggerGeneration)

	// Map every kernel, and gather the distinct images.
	recs := map[string]*kernelmap.Record{}
	kstat := map[string]*v1beta1.KernelStatus{}
	images := map[string]*imageWork{}
	var order []string
	mappings := obj.specPath().Child("moduleLoader", "container", "kernelMappings")
	for _, k := range kernels {
		ks := &v1beta1.KernelStatus{Kernel: k, Nodes: int32(len(t.byKernel[k]))}
		kstat[k] = ks
		rec, err := r.mapper.ResolveSpec(obj.Name, obj.podNamespace(), &obj.Spec, k)
		switch {
		case errors.Is(err, kernelmap.ErrNoMapping):
			ks.State, ks.Reason = v1beta1.KernelStateNoMapping, reason.NoMapping
			ks.Message = fmt.Sprintf("no entry of %s matches kernel %s", mappings, k)
			log.V(1).Info("no kernel mapping", "kernel", k, "nodes", ks.Nodes)
			continue
		case err != nil:
			ks.State, ks.Reason, ks.Message = v1beta1.KernelStateMappingFailed, reason.MappingFailed, err.Error()
			log.V(1).Info("kernel mapping failed", "kernel", k, "nodes", ks.Nodes, "error", err.Error())
			continue
		}
		log.V(1).Info("mapped kernel", "kernel", k, "image", rec.Image(), "nodes", ks.Nodes)
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
			w.set(v1beta1.KernelStateCheckFailed, reasonOr(authErr, reason.Unauthorized),
				fmt.Sprintf("%s: %v", obj.specPath().Child("imageRepoSecret"), authErr))
			w.requeue = time.Minute
		} else {
			r.ensureImage(ctx, obj, w, auth, verifyAll || r.dueForVerify(img))
		}
		res.requeue(w.requeue)
	}

	// Load where the image is ready; elsewhere keep what is loaded.
	load := map[string]*loader.PodRequest{}
	// want is what each node would load, whatever its version labels say:
	// a rolling upgrade of a versioned owner paces nodes towards it.
	want := map[string]*loader.PodRequest{}
	keep := t.keep
	if versions != nil {
		versions.unkeep(nodes, keep)
	}
	for _, k := range kernels {
		rec, ok := recs[k]
		if !ok {
			continue
		}
		w := images[rec.Image()]
		ks := kstat[k]
		ks.State, ks.Reason, ks.Digest, ks.Build, ks.Message = w.state, w.reason, w.digest, w.build, w.message
		if w.state == v1beta1.KernelStateReady {
			ks.Build = "" // only while a build matters
			r.lintKernel(ctx, ks, rec, auth)
		}
		// One request serves every node of the kernel: the loader fills
		// in the node on its own copy, and 5,000 nodes cost one config.
		var req *loader.PodRequest
		if w.state == v1beta1.KernelStateReady {
			req = &loader.PodRequest{
				Config:             moduleConfig(rec),
				ServiceAccountName: obj.Spec.ModuleLoader.ServiceAccountName,
				ImageRepoSecret:    rec.ImageRepoSecret(),
				Tolerations:        obj.Spec.Tolerations,
				ModuleVersion:      rec.ModuleVersion(),
			}
		}
		for _, n := range t.byKernel[k] {
			if req != nil {
				want[n.Name] = req
			}
			if versions != nil {
				switch versionLoad(n.Labels[versions.owner.VersionWorkerPodLabel()], versions.version) {
				case loadNotDesired:
					continue
				case loadKeep:
					keep[n.Name] = true
					continue
				}
			}
			if req == nil {
				keep[n.Name] = true
				continue
			}
			load[n.Name] = req
		}
	}
	sreq := r.syncRequest(obj, nodes)
	sreq.Desired, sreq.Keep = load, keep
	var roll *rollout
	if r.rolling != nil {
		// Outdated nodes keep the old module until their upgrade
		// reaches the load step.
		sreq.Desired, roll = r.rollGate(obj, t, load, want, keep)
		// Nodes that left the selector drop the rollout's state.
		var gone []*corev1.Node
		sel := labels.SelectorFromSet(obj.Spec.Selector)
		for _, n := range nodes {
			if !sel.Matches(labels.Set(n.Labels)) {
				gone = append(gone, n)
			}
		}
		if pending, err := r.rollCleanup(ctx, obj, roll.owner, gone); err != nil || pending {
			res.requeue(rollRequeue)
			if err != nil {
				log.Error(err, "removing the upgrade state of nodes that left the selector")
			}
		}
	}
	states, lerr := r.loader.Sync(ctx, sreq)
	for _, s := range states {
		res.requeue(s.RequeueAfter)
	}
	if versions != nil {
		versions.afterSync(states, &res)
	}
	res.Status = r.status(obj, t, kernels, kstat, load, states, lerr, versions)
	if roll != nil {
		lerr = errors.Join(lerr, r.rollStep(ctx, obj, roll, states, &res))
	}
	if verifyAll {
		res.Status.ImageRebuildTriggerGeneration = obj.Spec.ImageRebuildTriggerGeneration
	}
	if s := res.Status.ModuleLoader; s != nil {
		log.V(1).Info("synced nodes", "desired", s.DesiredNumber, "available", s.AvailableNumber, "loading", len(load),
			"loaderError", lerr != nil)
	}
	made := map[string]string{}
	for img, w := range images {
		if w.done != "" {
			made[img] = w.done
		}
	}
	r.events(obj, res.Status, made)
	dp, dperr := r.syncDevicePlugin(ctx, obj, nodes, r.devicePluginStops(obj, nodes))
	r.setDevicePlugin(&res.Status, dp)
	return res, errors.Join(lerr, verr, dperr)
}

// devicePluginStops is the hook through which day-2 policies stop the
// device plugin on nodes the spec targets (see syncDevicePlugin): the
// names of the nodes where it must not run now. A rolling upgrade
// (WithRollingUpgrade) stops it from its device-plugin-stop step until
// the node is validated, and while the node's upgrade has failed; the
// nodes' state labels say which (upgrade.DevicePluginHeld), so any
// Reconciler, restarted or not, agrees.
func (r *Reconciler) devicePluginStops(obj Object, nodes []*corev1.Node) map[string]bool {
	return upgrade.DevicePluginHeld(r.identity.Owner(obj.Namespace, obj.Name), nodes)
}

// invalid is the result of a pass over an invalid spec: only conditions
// change.
func (r *Reconciler) invalid(obj Object, errs field.ErrorList) Result {
	st := *obj.Status.DeepCopy()
	now := r.now()
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	list := capMessage(fmt.Sprintf("%d error(s): %s", len(errs), strings.Join(msgs, "; ")))
	was := meta.FindStatusCondition(obj.Status.Conditions, ConditionValid)
	if was == nil || was.Status != metav1.ConditionFalse || was.Message != list {
		r.event(obj, corev1.EventTypeWarning, string(reason.InvalidSpec), "%s", list)
	}
	setCondition(&st.Conditions, metav1.Condition{Type: ConditionValid, Status: metav1.ConditionFalse, Reason: string(reason.InvalidSpec),
		Message: list, ObservedGeneration: obj.Generation}, now)
	setCondition(&st.Conditions, metav1.Condition{Type: ConditionDegraded, Status: metav1.ConditionTrue, Reason: string(reason.InvalidSpec),
		Message: capMessage("the spec is invalid, so nothing was changed in the cluster: " + list), ObservedGeneration: obj.Generation}, now)
	return Result{Status: st}
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
	return pullsecret.Keychain(ctx, r.client, obj.podNamespace(), s.Name)
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
		// The device plugin goes with the namespace; its node labels are
		// kmmkit's to remove (best effort: nothing waits for them).
		if _, err := r.syncDevicePlugin(ctx, obj, nodes, nil); err != nil {
			r.logger(ctx).Error(err, "removing the device plugin's node labels of a deleted namespace")
		}
		res.Done = true
		return res, nil
	}
	// The device plugin goes first (KMM's #590): its DaemonSets are
	// deleted and the target labels stripped, and a node unloads only
	// once no device plugin Pod of the owner is left there, since a
	// running one keeps the module in use.
	dp, dperr := r.syncDevicePlugin(ctx, obj, nodes, nil)
	sreq := r.syncRequest(obj, nodes)
	sreq.Keep = map[string]bool{}
	var waitDP []string
	for _, n := range nodes {
		if dp.podsOn == nil || dp.podsOn[n.Name] {
			sreq.Keep[n.Name] = true
			if dp.podsOn != nil {
				waitDP = append(waitDP, n.Name)
			}
		}
	}
	states, err := r.loader.Sync(ctx, sreq)
	err = errors.Join(dperr, err)
	// A rolling upgrade leaves no state, and no cordon of its own, behind.
	rollPending, rerr := r.rollCleanup(ctx, obj, r.identity.Owner(obj.Namespace, obj.Name), nodes)
	err = errors.Join(err, rerr)
	var pending []string
	for _, s := range states {
		if s.Phase != loader.PhaseUnloaded {
			pending = append(pending, s.Node)
		}
		res.requeue(s.RequeueAfter)
	}
	sort.Strings(pending)
	cond := metav1.Condition{Type: ConditionLoaded, Status: metav1.ConditionFalse, Reason: string(reason.Unloading),
		Message: fmt.Sprintf("unloading from %d node(s): %s", len(pending), names(pending, 10)), ObservedGeneration: obj.Generation}
	if len(waitDP) > 0 {
		sort.Strings(waitDP)
		cond.Message += fmt.Sprintf("; waiting for the device plugin Pods to leave %d node(s) first: %s", len(waitDP), names(waitDP, 10))
	}
	if rollPending {
		res.requeue(rollRequeue)
	}
	if len(pending) == 0 {
		cond.Reason, cond.Message = string(reason.Unloaded), "unloaded from every node"
		res.Done = err == nil && !rollPending
	} else {
		res.requeue(5 * time.Second)
	}
	setCondition(&res.Status.Conditions, cond, r.now())
	return res, err
}
