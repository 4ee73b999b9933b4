package loader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// NodeLoader brings one Module to its desired state on every node: loaded
// where it is desired, unloaded where it was loaded and is no longer
// desired. PodLoader does it with worker Pods; loader/fake records it in
// memory for tests.
type NodeLoader interface {
	// Sync makes one level-triggered pass for a Module and reports the
	// state on every node it touched. Calling it again with the same
	// request makes no further writes once the state is reached.
	Sync(ctx context.Context, req SyncRequest) ([]NodeState, error)
}

// SyncRequest is one Module's desired state across the cluster.
type SyncRequest struct {
	// Namespace and Module name the Module; worker Pods live in Namespace.
	Namespace, Module string
	// Nodes are all nodes of the cluster. The module is unloaded from
	// nodes where it was loaded and that are not in Desired; worker Pods on
	// nodes not listed (deleted nodes) are removed.
	Nodes []*corev1.Node
	// Desired holds, per node name, what to load there. Node, Module,
	// Namespace and Action of each entry are filled in by the loader.
	Desired map[string]*PodRequest
	// Keep names nodes whose current state is kept as it is: what is
	// loaded there stays loaded and nothing new starts (used while the
	// image for a new config is not ready yet, as KMM does).
	Keep map[string]bool
	// Owner, when set, owns the worker Pods (usually the Module), so they
	// are garbage-collected with it.
	Owner *metav1.OwnerReference
}

// Phase is where a module stands on a node.
type Phase string

// Phases of a module on a node.
const (
	PhaseLoaded    Phase = "Loaded"
	PhaseLoading   Phase = "Loading"
	PhaseUnloading Phase = "Unloading"
	PhaseUnloaded  Phase = "Unloaded"
	// PhaseFailed: the worker cannot make progress (it keeps retrying);
	// the condition says why.
	PhaseFailed Phase = "Failed"
	// PhaseBlocked: a taint the Module does not tolerate keeps the worker
	// off the node.
	PhaseBlocked Phase = "Blocked"
)

// ConditionLoaded is the type of NodeState.Condition.
const ConditionLoaded = "Loaded"

// NodeState is a module's state on one node after a Sync.
type NodeState struct {
	// Node is the node name.
	Node string
	// Phase is the summary.
	Phase Phase
	// Observed is what is recorded as loaded, nil if nothing.
	Observed *Observed
	// Condition explains Phase with a reason a user can act on. Its
	// LastTransitionTime is left for the caller's condition helpers.
	Condition metav1.Condition
	// RequeueAfter, when not zero, asks for another Sync then (to notice a
	// stuck worker, or to retry after a failed Pod).
	RequeueAfter time.Duration
}

// PodLoader is the Kubernetes NodeLoader: it runs KMM's worker Pods
// (WorkerPod) and keeps, per node and module, the desired vs observed
// state that KMM keeps in NodeModulesConfig objects. The observed state is
// a node annotation (ObservedAnnotation), so no CRD is needed.
//
// It follows KMM's rules: load when nothing is loaded; unload then load
// when the config changed on the same kernel; load directly on a new
// kernel; reload after a reboot (another bootID); unload where no longer
// desired. It sets KMM's .ready and .version.ready node labels and emits
// ModuleLoaded and ModuleUnloaded node events. Unlike KMM it reports a
// worker that cannot pull its image, fails, or is stuck, as a condition,
// and replaces a failing Pod whose template is outdated even when it
// never started.
type PodLoader struct {
	client     kubernetes.Interface
	opts       PodOptions
	recorder   record.EventRecorder
	log        logr.Logger
	now        func() time.Time
	stuckAfter time.Duration
	retryAfter time.Duration
}

// PodLoaderOption configures a PodLoader.
type PodLoaderOption func(*PodLoader)

// WithEventRecorder emits ModuleLoaded and ModuleUnloaded events on nodes.
func WithEventRecorder(r record.EventRecorder) PodLoaderOption {
	return func(l *PodLoader) { l.recorder = r }
}

// WithPodLoaderLogger sets the logger.
func WithPodLoaderLogger(log logr.Logger) PodLoaderOption {
	return func(l *PodLoader) { l.log = log }
}

// WithClock replaces time.Now (for tests).
func WithClock(now func() time.Time) PodLoaderOption {
	return func(l *PodLoader) { l.now = now }
}

// WithStuckTimeout sets how long a worker Pod may run or stay pending
// before it is reported as stuck (default 5 minutes; 0 disables).
func WithStuckTimeout(d time.Duration) PodLoaderOption {
	return func(l *PodLoader) { l.stuckAfter = d }
}

// NewPodLoader returns a PodLoader that writes through client. opts must
// name the worker image.
func NewPodLoader(client kubernetes.Interface, opts PodOptions, o ...PodLoaderOption) (*PodLoader, error) {
	if client == nil {
		return nil, errors.New("pod loader: nil client")
	}
	if opts.WorkerImage == "" {
		return nil, errors.New("pod loader: PodOptions.WorkerImage is empty")
	}
	l := &PodLoader{client: client, opts: opts, log: logr.Discard(), now: time.Now,
		stuckAfter: 5 * time.Minute, retryAfter: 10 * time.Second}
	for _, f := range o {
		f(l)
	}
	return l, nil
}

// Sync implements NodeLoader. Errors of single nodes are joined; the
// states of the other nodes are still returned.
func (l *PodLoader) Sync(ctx context.Context, req SyncRequest) ([]NodeState, error) {
	if req.Namespace == "" || req.Module == "" {
		return nil, errors.New("pod loader: SyncRequest needs Namespace and Module")
	}
	pods, err := l.client.CoreV1().Pods(req.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelModuleName + "=" + req.Module + "," + LabelWorkerAction,
	})
	if err != nil {
		return nil, fmt.Errorf("listing worker pods of %s/%s: %w", req.Namespace, req.Module, err)
	}
	podsByNode := map[string]*corev1.Pod{}
	var errs []error
	nodes := map[string]*corev1.Node{}
	for _, n := range req.Nodes {
		nodes[n.Name] = n
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if _, ok := nodes[p.Spec.NodeName]; !ok {
			// The node is gone: its worker Pod can never run.
			if err := l.deletePod(ctx, p); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if old, dup := podsByNode[p.Spec.NodeName]; dup {
			// Two workers for one node (a renamed Pod): keep the newer.
			if old.CreationTimestamp.After(p.CreationTimestamp.Time) {
				old, p = p, old
			}
			if err := l.deletePod(ctx, old); err != nil {
				errs = append(errs, err)
			}
		}
		podsByNode[p.Spec.NodeName] = p
	}
	names := make([]string, 0, len(nodes))
	obsKey, readyKey := ObservedAnnotation(req.Namespace, req.Module), ReadyLabel(req.Namespace, req.Module)
	for name, n := range nodes {
		_, desired := req.Desired[name]
		_, hasPod := podsByNode[name]
		_, hasObs := n.Annotations[obsKey]
		_, ready := n.Labels[readyKey]
		if desired || hasPod || hasObs || ready {
			names = append(names, name)
		}
	}
	for name := range req.Desired {
		if _, ok := nodes[name]; !ok {
			errs = append(errs, fmt.Errorf("desired node %q is not in SyncRequest.Nodes", name))
		}
	}
	sort.Strings(names)
	states := make([]NodeState, 0, len(names))
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return states, errors.Join(append(errs, err)...)
		}
		desired := req.Desired[name]
		if desired == nil && req.Keep[name] {
			obs, _, _ := ObservedOn(nodes[name], req.Namespace, req.Module)
			if obs == nil && podsByNode[name] == nil {
				continue
			}
			if obs != nil {
				keep := obs.Request()
				desired = &keep
			}
		}
		st, err := l.syncNode(ctx, req, nodes[name], podsByNode[name], desired)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", name, err))
		}
		states = append(states, st)
	}
	return states, errors.Join(errs...)
}

// nodeSync is the work on one node: the node's pending label and
// annotation changes and the resulting state.
type nodeSync struct {
	l       *PodLoader
	req     SyncRequest
	node    *corev1.Node
	obs     *Observed
	desired *PodRequest
	labels  map[string]*string
	annots  map[string]*string
	st      NodeState
}

func (l *PodLoader) syncNode(ctx context.Context, req SyncRequest, node *corev1.Node, pod *corev1.Pod, desired *PodRequest) (NodeState, error) {
	s := &nodeSync{l: l, req: req, node: node, desired: desired,
		labels: map[string]*string{}, annots: map[string]*string{}}
	s.st.Node = node.Name
	obs, _, err := ObservedOn(node, req.Namespace, req.Module)
	if err != nil {
		// A damaged record cannot be unloaded from; reload over it.
		l.log.Error(err, "ignoring unreadable observed state", "node", node.Name)
		s.annots[ObservedAnnotation(req.Namespace, req.Module)] = nil
		obs = nil
	}
	s.obs = obs
	bootID := node.Status.NodeInfo.BootID
	if s.obs != nil && bootID != "" && s.obs.BootID != "" && s.obs.BootID != bootID {
		// The node rebooted since the load: nothing of ours is loaded.
		l.log.V(1).Info("node rebooted since load", "node", node.Name, "module", req.Module)
		s.setObserved(nil)
	}
	if pod != nil {
		pod, err = s.harvest(ctx, pod)
		if errors.Is(err, errStop) {
			err = s.patchNode(ctx)
			s.st.Observed = s.obs
			return s.st, err
		}
		if err != nil {
			return s.st, err
		}
	}
	if pod != nil {
		err = s.withPod(ctx, pod)
	} else {
		err = s.withoutPod(ctx)
	}
	if perr := s.patchNode(ctx); perr != nil {
		err = errors.Join(err, perr)
	}
	s.st.Observed = s.obs
	return s.st, err
}

// harvest records the result of a finished worker Pod and deletes it. The
// node is patched before the Pod is deleted, so a crash in between loses
// nothing: the next pass finds the Pod again.
func (s *nodeSync) harvest(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	switch {
	case pod.DeletionTimestamp != nil:
		return pod, nil
	case pod.Status.Phase == corev1.PodSucceeded:
		if Action(pod.Labels[LabelWorkerAction]) == ActionLoad {
			obs, err := observedFromPod(pod, s.node.Status.NodeInfo.BootID)
			if err != nil {
				return pod, err
			}
			s.setObserved(obs)
		} else {
			s.setObserved(nil)
		}
		if err := s.patchNode(ctx); err != nil {
			return pod, err
		}
		return nil, s.l.deletePod(ctx, pod)
	case pod.Status.Phase == corev1.PodFailed:
		d := diagnose(pod, s.l.now(), 0)
		s.fail(d.reason, d.message)
		s.st.RequeueAfter = s.l.retryAfter
		if err := s.l.deletePod(ctx, pod); err != nil {
			return pod, err
		}
		return nil, errStop
	}
	return pod, nil
}

// errStop ends a node's pass early without an error.
var errStop = errors.New("stop")

func (s *nodeSync) withPod(ctx context.Context, pod *corev1.Pod) error {
	action := Action(pod.Labels[LabelWorkerAction])
	d := diagnose(pod, s.l.now(), s.l.stuckAfter)
	if action == ActionUnload {
		s.progress(PhaseUnloading, ReasonUnloading, fmt.Sprintf("worker pod %s is unloading the module", pod.Name), d, pod)
		return nil
	}
	if pod.DeletionTimestamp != nil {
		s.progress(PhaseLoading, ReasonLoading, fmt.Sprintf("waiting for the outdated worker pod %s to go", pod.Name), diagnosis{}, nil)
		return nil
	}
	if s.desired == nil {
		s.progress(PhaseUnloading, ReasonUnloading, "stopping the loader: the module is no longer wanted here", diagnosis{}, nil)
		return s.l.deletePod(ctx, pod)
	}
	want, err := s.podFor(ActionLoad, *s.desired)
	if err != nil {
		s.fail(ReasonInvalidRequest, err.Error())
		return err
	}
	started := len(pod.Status.ContainerStatuses) > 0 && pod.Status.ContainerStatuses[0].State.Running != nil
	if pod.Annotations[AnnotationWorkerHash] != want.Annotations[AnnotationWorkerHash] && (d.failing || d.stuck || !started) {
		// KMM replaces an outdated worker only after its container
		// restarted, so one that cannot even pull its image stays forever.
		s.progress(PhaseLoading, ReasonLoading, fmt.Sprintf("replacing worker pod %s: the module's config changed", pod.Name), diagnosis{}, nil)
		return s.l.deletePod(ctx, pod)
	}
	s.progress(PhaseLoading, ReasonLoading, fmt.Sprintf("worker pod %s is loading the module", pod.Name), d, pod)
	return nil
}

func (s *nodeSync) withoutPod(ctx context.Context) error {
	if s.desired == nil {
		if s.obs == nil {
			s.set(PhaseUnloaded, metav1.ConditionFalse, ReasonUnloaded, "the module is not loaded on this node")
			return nil
		}
		return s.create(ctx, ActionUnload, s.obs.Request())
	}
	if taint := untolerated(s.node, s.desired.Tolerations); taint != nil {
		s.set(PhaseBlocked, metav1.ConditionFalse, ReasonNodeTainted,
			fmt.Sprintf("node taint %s=%s:%s is not tolerated by the Module, so no worker can run there", taint.Key, taint.Value, taint.Effect))
		return nil
	}
	switch {
	case s.obs == nil:
		return s.create(ctx, ActionLoad, *s.desired)
	case !equality.Semantic.DeepEqual(s.obs.Config, s.desired.Config):
		if s.obs.Config.KernelVersion == s.desired.Config.KernelVersion {
			return s.create(ctx, ActionUnload, s.obs.Request())
		}
		// A new kernel: the old module is not loaded in it.
		return s.create(ctx, ActionLoad, *s.desired)
	}
	s.set(PhaseLoaded, metav1.ConditionTrue, ReasonLoaded,
		fmt.Sprintf("%s from %s is loaded in kernel %s", s.obs.Config.Modprobe.ModuleName, s.obs.Config.ContainerImage, s.obs.Config.KernelVersion))
	return nil
}

func (s *nodeSync) podFor(action Action, r PodRequest) (*corev1.Pod, error) {
	r.Node, r.Module, r.Namespace, r.Action = s.node.Name, s.req.Module, s.req.Namespace, action
	pod, err := WorkerPod(r, s.l.opts)
	if err != nil {
		return nil, err
	}
	if s.req.Owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*s.req.Owner}
	}
	return pod, nil
}

func (s *nodeSync) create(ctx context.Context, action Action, r PodRequest) error {
	phase, reason := PhaseLoading, ReasonLoading
	if action == ActionUnload {
		phase, reason = PhaseUnloading, ReasonUnloading
	}
	pod, err := s.podFor(action, r)
	if err != nil {
		s.fail(ReasonInvalidRequest, err.Error())
		return err
	}
	_, err = s.l.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		// The previous worker is still going away; try again shortly.
		s.st.RequeueAfter = 2 * time.Second
	case err != nil:
		s.fail(ReasonWorkerFailed, fmt.Sprintf("creating worker pod %s: %v", pod.Name, err))
		return fmt.Errorf("creating worker pod %s/%s: %w", pod.Namespace, pod.Name, err)
	default:
		s.l.log.Info("created worker pod", "pod", pod.Name, "node", s.node.Name, "action", action)
	}
	s.set(phase, metav1.ConditionFalse, reason, fmt.Sprintf("worker pod %s created to %s the module", pod.Name, action))
	if s.l.stuckAfter > 0 && s.st.RequeueAfter == 0 {
		s.st.RequeueAfter = s.l.stuckAfter
	}
	return nil
}

// progress reports a running worker, or its failure.
func (s *nodeSync) progress(phase Phase, reason, msg string, d diagnosis, pod *corev1.Pod) {
	switch {
	case d.failing:
		s.fail(d.reason, d.message)
	case d.stuck:
		s.set(phase, metav1.ConditionFalse, d.reason, d.message)
	default:
		s.set(phase, metav1.ConditionFalse, reason, msg)
		if pod != nil && s.l.stuckAfter > 0 && !pod.CreationTimestamp.IsZero() {
			if left := s.l.stuckAfter - s.l.now().Sub(pod.CreationTimestamp.Time); left > 0 {
				s.st.RequeueAfter = left + time.Second
			}
		}
	}
}

func (s *nodeSync) set(phase Phase, status metav1.ConditionStatus, reason, msg string) {
	s.st.Phase = phase
	s.st.Condition = metav1.Condition{Type: ConditionLoaded, Status: status, Reason: reason, Message: msg}
}

func (s *nodeSync) fail(reason, msg string) { s.set(PhaseFailed, metav1.ConditionFalse, reason, msg) }

// setObserved records (or, with nil, clears) the observed state.
func (s *nodeSync) setObserved(obs *Observed) {
	key := ObservedAnnotation(s.req.Namespace, s.req.Module)
	s.obs = obs
	if obs == nil {
		s.annots[key] = nil
		return
	}
	raw, _ := json.Marshal(obs) // plain data: cannot fail
	v := string(raw)
	s.annots[key] = &v
}

// patchNode applies pending annotation changes and brings the ready labels
// in line with the observed state, emitting KMM's events when the ready
// label appears or goes. It writes only when something changes.
func (s *nodeSync) patchNode(ctx context.Context) error {
	ns, name := s.req.Namespace, s.req.Module
	ready := s.desired != nil && s.obs != nil && equality.Semantic.DeepEqual(s.obs.Config, s.desired.Config)
	readyKey, versionKey := ReadyLabel(ns, name), VersionReadyLabel(ns, name)
	_, wasReady := s.node.Labels[readyKey]
	empty := ""
	if ready {
		s.labels[readyKey] = &empty
		if v := s.obs.Version; v != "" {
			s.labels[versionKey] = &v
		} else {
			s.labels[versionKey] = nil
		}
	} else {
		s.labels[readyKey], s.labels[versionKey] = nil, nil
	}
	labels := changes(s.node.Labels, s.labels)
	annots := changes(s.node.Annotations, s.annots)
	s.labels, s.annots = map[string]*string{}, map[string]*string{}
	if len(labels) == 0 && len(annots) == 0 {
		return nil
	}
	meta := map[string]any{}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	if len(annots) > 0 {
		meta["annotations"] = annots
	}
	patch, _ := json.Marshal(map[string]any{"metadata": meta})
	updated, err := s.l.client.CoreV1().Nodes().Patch(ctx, s.node.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("patching node %s: %w", s.node.Name, err)
	}
	s.node = updated
	if s.l.recorder != nil && ready != wasReady {
		ref := &corev1.ObjectReference{Kind: "Node", Name: updated.Name, UID: updated.UID, APIVersion: "v1"}
		annotations := map[string]string{"module": ns + "/" + name}
		if ready {
			s.l.recorder.AnnotatedEventf(ref, annotations, corev1.EventTypeNormal, "ModuleLoaded", "Module %s/%s loaded into the kernel", ns, name)
		} else {
			s.l.recorder.AnnotatedEventf(ref, annotations, corev1.EventTypeNormal, "ModuleUnloaded", "Module %s/%s unloaded from the kernel", ns, name)
		}
	}
	return nil
}

// changes returns the entries of want that differ from have, as a JSON
// merge patch map (nil deletes).
func changes(have map[string]string, want map[string]*string) map[string]any {
	out := map[string]any{}
	for k, v := range want {
		cur, ok := have[k]
		switch {
		case v == nil && ok:
			out[k] = nil
		case v != nil && (!ok || cur != *v):
			out[k] = *v
		}
	}
	return out
}

func (l *PodLoader) deletePod(ctx context.Context, pod *corev1.Pod) error {
	err := l.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting worker pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	l.log.V(1).Info("deleted worker pod", "pod", pod.Name, "node", pod.Spec.NodeName)
	return nil
}

// observedFromPod reads what a successful load Pod loaded.
func observedFromPod(pod *corev1.Pod, bootID string) (*Observed, error) {
	cfg, err := v1beta1.DecodeModuleConfig([]byte(pod.Annotations[AnnotationWorkerConfig]))
	if err != nil {
		return nil, fmt.Errorf("worker pod %s: annotation %s: %w", pod.Name, AnnotationWorkerConfig, err)
	}
	obs := &Observed{Config: *cfg, BootID: bootID, Version: pod.Annotations[AnnotationModuleVersion],
		ServiceAccountName: pod.Spec.ServiceAccountName}
	if len(pod.Spec.ImagePullSecrets) > 0 {
		obs.ImageRepoSecret = &pod.Spec.ImagePullSecrets[0]
	}
	if t := pod.Annotations[AnnotationTolerations]; t != "" {
		if err := yaml.Unmarshal([]byte(t), &obs.Tolerations); err != nil {
			return nil, fmt.Errorf("worker pod %s: annotation %s: %w", pod.Name, AnnotationTolerations, err)
		}
	}
	return obs, nil
}

// untolerated returns a NoExecute taint of node that tolerations do not
// tolerate: such a taint would evict a worker at once. NoSchedule taints
// (cordoning, pressure) do not stop a worker, whose Pod names its node.
func untolerated(node *corev1.Node, tolerations []corev1.Toleration) *corev1.Taint {
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		ok := false
		for j := range tolerations {
			if tolerations[j].ToleratesTaint(t) {
				ok = true
				break
			}
		}
		if !ok {
			return t
		}
	}
	return nil
}
