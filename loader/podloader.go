package loader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/ctxlog"
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

// SyncRequest is one owner's desired state across the cluster. The owner
// is a KMM Module, or an embedder's resource of another Identity.
type SyncRequest struct {
	// Namespace and Module name the owner; Namespace is "" for a
	// cluster-scoped owner (which needs an Identity and a PodNamespace).
	Namespace, Module string
	// Identity is the owner's kind and label domain, which names the
	// worker Pods, their labels and the node keys (see package identity);
	// the zero value is KMM's Module.
	Identity identity.Domain
	// PodNamespace is where worker Pods run; "" means Namespace. It may
	// differ from Namespace only for a cluster-scoped owner, because an
	// owner reference cannot cross namespaces.
	PodNamespace string
	// Nodes are all nodes of the cluster, as the caller sees them (an
	// informer's lister may lag). The module is unloaded from nodes where
	// it was loaded and that are not in Desired; worker Pods on nodes that
	// no longer exist are removed.
	Nodes []*corev1.Node
	// Desired holds, per node name, what to load there. Node, Module,
	// Namespace, Identity, PodNamespace and Action of each entry are
	// filled in by the loader, on its own copy: the entries are not
	// modified, so one may serve all the nodes of a kernel.
	Desired map[string]*PodRequest
	// Keep names nodes whose current state is kept as it is: what is
	// loaded there stays loaded and nothing new starts (used while the
	// image for a new config is not ready yet, as KMM does).
	Keep map[string]bool
	// Owner, when set, owns the worker Pods (usually the Module), so they
	// are garbage-collected with it.
	Owner *metav1.OwnerReference
}

// Validate reports what makes r unusable.
func (r SyncRequest) Validate() error {
	if r.Module == "" {
		return errors.New("SyncRequest needs a Module (the owner's name)")
	}
	if err := r.Identity.Owner(r.Namespace, r.Module).Validate(); err != nil {
		return err
	}
	switch {
	case r.Namespace == "" && r.PodNamespace == "":
		return fmt.Errorf("SyncRequest for cluster-scoped %s needs a PodNamespace for its worker Pods", r.Identity.Owner("", r.Module))
	case r.Namespace != "" && r.PodNamespace != "" && r.PodNamespace != r.Namespace:
		return fmt.Errorf("SyncRequest for %s: PodNamespace %q differs from the owner's namespace; a namespaced owner's worker Pods run in its namespace",
			r.Identity.Owner(r.Namespace, r.Module), r.PodNamespace)
	}
	return nil
}

func (r SyncRequest) podNamespace() string { return firstNonEmpty(r.PodNamespace, r.Namespace) }

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
	// Observed is what is recorded as loaded, nil if nothing. Its config
	// is shared with the other nodes of the same record (the loader keeps
	// records decoded, so that a steady pass decodes nothing): read it,
	// do not modify it.
	Observed *Observed
	// Condition explains Phase with a reason a user can act on. Its
	// LastTransitionTime is left for the caller's condition helpers.
	Condition metav1.Condition
	// RequeueAfter, when not zero, asks for another Sync then (to notice a
	// stuck worker, or to retry after a failed Pod).
	RequeueAfter time.Duration
}

// PodLoader is the Kubernetes NodeLoader: it runs KMM's worker Pods
// (WorkerPod) and keeps, per node and owner, the desired vs observed
// state that KMM keeps in NodeModulesConfig objects. The observed state is
// a node annotation (identity.Owner.ObservedAnnotation), so no CRD is
// needed.
//
// It follows KMM's rules: load when nothing is loaded; unload then load
// when the config changed on the same kernel; load directly on a new
// kernel; reload after a reboot (another bootID); unload where no longer
// desired. It sets KMM's .ready and .version.ready node labels and emits
// ModuleLoaded and ModuleUnloaded node events. Unlike KMM it reports a
// worker that cannot pull its image, fails, or is stuck, as a condition,
// and replaces a failing Pod whose template is outdated even when it
// never started.
//
// Views may lag. The nodes of a SyncRequest and the Pods of a PodLister
// may come from informer caches older than the loader's own last writes.
// The loader remembers what it wrote (its keys on each node, the worker
// Pods it created and deleted) and reads a node or Pod again from the API
// server whenever a view disagrees, so no pass creates a worker the
// previous pass finished with, unloads what it just loaded, harvests a
// finished worker twice, or flips a label back. Pods are deleted with
// preconditions, so a decision made on an outdated Pod never deletes a
// newer one; a name that is taken is read, not retried blindly. Use one
// PodLoader per process: two loaders do not share what they remember.
type PodLoader struct {
	client      kubernetes.Interface
	workerImage string
	pod         podOptions
	recorder    record.EventRecorder
	log         ctxlog.Logger
	clock       clock.PassiveClock
	stuckAfter  time.Duration
	retryAfter  time.Duration
	pods        PodLister
	maxWorkers  int
	mem         *memory
}

// PodLister lists the Pods of a namespace that match selector: an
// informer's lister, say. It may lag behind the API server; the loader
// reads again what disagrees with its own writes. Returned Pods are not
// modified.
type PodLister func(ctx context.Context, namespace string, selector labels.Selector) ([]*corev1.Pod, error)

// NewPodLoader returns a PodLoader that writes through client and runs
// workerImage, which holds the worker binary (`kmm image worker REF`
// builds and pushes one). It fails without a client or a worker image,
// and on an option it cannot use, naming it.
func NewPodLoader(client kubernetes.Interface, workerImage string, opts ...Option) (*PodLoader, error) {
	if client == nil {
		return nil, errors.New("pod loader: NewPodLoader needs a clientset")
	}
	o, err := newOptions(workerImage, opts)
	if err != nil {
		return nil, err
	}
	l := &PodLoader{client: client, workerImage: workerImage, pod: o.pod, recorder: o.recorder, log: o.log,
		clock: o.clock, stuckAfter: o.stuckAfter, retryAfter: 10 * time.Second, pods: o.pods, maxWorkers: o.maxWorkers, mem: newMemory()}
	if l.pods == nil {
		l.pods = func(ctx context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error) {
			list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
			if err != nil {
				return nil, err
			}
			out := make([]*corev1.Pod, len(list.Items))
			for i := range list.Items {
				out[i] = &list.Items[i]
			}
			return out, nil
		}
	}
	return l, nil
}

// now reads the loader's clock.
func (l *PodLoader) now() time.Time { return l.clock.Now() }

// Sync implements NodeLoader. Errors of single nodes are joined; the
// states of the other nodes are still returned.
func (l *PodLoader) Sync(ctx context.Context, req SyncRequest) ([]NodeState, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("pod loader: %w", err)
	}
	owner := req.Identity.Owner(req.Namespace, req.Module)
	podNS := req.podNamespace()
	sel, err := labels.Parse(owner.WorkerSelector())
	if err != nil {
		return nil, fmt.Errorf("pod loader: selector of %s: %w", owner, err)
	}
	pods, err := l.pods(ctx, podNS, sel)
	if err != nil {
		return nil, fmt.Errorf("listing worker pods of %s in namespace %s: %w", owner, podNS, err)
	}
	defer l.mem.sweep(l.now())
	var errs []error
	nodes := map[string]*corev1.Node{}
	for _, n := range req.Nodes {
		nodes[n.Name] = n
	}
	podsByNode := map[string][]*corev1.Pod{}
	keys := l.mem.keys(owner)
	workers := &workerCount{max: l.maxWorkers, keys: keys}
	for _, p := range pods {
		if owner.IsWorker(p.Labels) {
			podsByNode[p.Spec.NodeName] = append(podsByNode[p.Spec.NodeName], p)
			workers.running++
		}
	}
	seen := map[string]bool{}
	var names []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	defer l.mem.records.forget(keys.observed, func(node string) bool { return nodes[node] != nil })
	for name, n := range nodes {
		if _, desired := req.Desired[name]; desired || holdsKeys(n, keys) {
			add(name)
		}
	}
	for name := range podsByNode {
		add(name)
	}
	for _, name := range l.mem.nodesOf(owner) {
		add(name)
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
		st, ok, err := l.syncNode(ctx, req, owner, name, nodes[name], podsByNode[name], workers)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", name, err))
		}
		if ok {
			states = append(states, st)
		}
	}
	return states, errors.Join(errs...)
}

// nodeSync is the work on one node: the node's pending label and
// annotation changes and the resulting state.
type nodeSync struct {
	l     *PodLoader
	req   SyncRequest
	owner identity.Owner
	node  *corev1.Node
	// outdated is set when the node, read from the API server, runs
	// another kernel than the caller's view of it: what the caller
	// desires there was chosen for a kernel the node no longer runs, so
	// only facts are recorded (finished workers) until it sees the node
	// as it is.
	outdated bool
	obs      *Observed
	desired  *PodRequest
	annots   map[string]*string // pending annotation changes (nil deletes); made when needed
	taken    *corev1.Pod        // the Pod a create found under its name
	workers  *workerCount
	st       NodeState
}

// workerCount is how many worker Pods of the owner exist during a Sync
// (as listed, plus those it created, minus those it harvested), against
// WithMaxWorkers (0: no limit).
type workerCount struct {
	running, max int
	keys         ownerKeys // made once per Sync, not per node
}

// ownerKeys are an owner's node keys.
type ownerKeys struct{ observed, ready, version, deprecated string }

func keysOf(o identity.Owner) ownerKeys {
	return ownerKeys{observed: o.ObservedAnnotation(), ready: o.ReadyLabel(), version: o.VersionReadyLabel(), deprecated: deprecatedReadyLabel(o)}
}

// holdsKeys reports whether node carries any of the owner's keys.
func holdsKeys(node *corev1.Node, k ownerKeys) bool {
	_, obs := node.Annotations[k.observed]
	_, ready := node.Labels[k.ready]
	_, version := node.Labels[k.version]
	return obs || ready || version
}

func (w *workerCount) full() bool { return w.max > 0 && w.running >= w.max }

// syncNode brings one node to its desired state. ok is false when there is
// nothing to report: the node is gone, the caller does not see it yet, or
// nothing of the owner is there and nothing is wanted.
func (l *PodLoader) syncNode(ctx context.Context, req SyncRequest, owner identity.Owner, name string, view *corev1.Node, pods []*corev1.Pod, workers *workerCount) (NodeState, bool, error) {
	node, fresh, err := l.node(ctx, owner, name, view)
	if err != nil {
		return NodeState{}, false, err
	}
	if node == nil {
		// The node is gone: its worker Pods can never run.
		var errs []error
		for _, p := range pods {
			errs = append(errs, l.deletePod(ctx, owner, p, false))
		}
		l.mem.forgetNode(owner, name)
		return NodeState{}, false, errors.Join(errs...)
	}
	if view == nil {
		// The caller's view lags behind the node: nothing is desired or
		// kept there yet, which must not read as "unload".
		return NodeState{}, false, nil
	}
	pod, err := l.workerPod(ctx, owner, req.podNamespace(), name, pods)
	if err != nil {
		return NodeState{}, false, err
	}
	if !fresh && pod != nil && pod.DeletionTimestamp == nil && pod.Status.Phase == corev1.PodSucceeded &&
		Action(pod.Labels[owner.ActionLabel()]) == ActionLoad {
		// A finished load records the node's boot ID: take it from the
		// node as it is now, not from a view.
		if node, err = l.readNode(ctx, owner, name); err != nil || node == nil {
			return NodeState{}, false, err
		}
		fresh = true
	}
	desired := req.Desired[name]
	s := &nodeSync{l: l, req: req, owner: owner, node: node, workers: workers,
		outdated: fresh && view.Status.NodeInfo.KernelVersion != node.Status.NodeInfo.KernelVersion,
	}
	s.st.Node = name
	obs, err := l.mem.records.observed(node, workers.keys.observed)
	if err != nil {
		// A damaged record cannot be unloaded from; reload over it.
		l.log.From(ctx).Error(err, "ignoring unreadable observed state", "node", name)
		s.setAnnotation(workers.keys.observed, nil)
		obs = nil
	}
	if desired == nil && req.Keep[name] {
		if obs == nil && pod == nil {
			return NodeState{}, false, nil
		}
		if obs != nil {
			keep := obs.Request()
			desired = &keep
		}
	}
	if desired == nil && pod == nil && !holdsKeys(node, workers.keys) {
		// Only a lagging view said the node held something of the owner.
		return NodeState{}, false, nil
	}
	s.desired, s.obs = desired, obs
	bootID := node.Status.NodeInfo.BootID
	if s.obs != nil && bootID != "" && s.obs.BootID != "" && s.obs.BootID != bootID {
		// The node rebooted since the load: nothing of ours is loaded.
		l.log.From(ctx).V(1).Info("node rebooted since load", "node", name, "owner", owner.String())
		s.setObserved(nil)
	}
	for round := 0; round < 2; round++ {
		if pod != nil {
			pod, err = s.harvest(ctx, pod)
			if errors.Is(err, errStop) {
				err = s.patchNode(ctx)
				s.st.Observed = s.obs
				return s.st, true, err
			}
			if err != nil {
				return s.st, true, err
			}
		}
		if s.outdated {
			s.set(PhaseLoading, metav1.ConditionFalse, ReasonLoading, fmt.Sprintf("waiting for an up-to-date view of node %s, which now runs kernel %s",
				name, node.Status.NodeInfo.KernelVersion))
			s.st.RequeueAfter = 2 * time.Second
			break
		}
		if pod != nil {
			err = s.withPod(ctx, pod)
		} else {
			err = s.withoutPod(ctx)
		}
		if s.taken == nil || err != nil {
			break
		}
		// The name was taken by a worker of ours the views did not show
		// yet: go on with it.
		pod, s.taken = s.taken, nil
	}
	if perr := s.patchNode(ctx); perr != nil {
		err = errors.Join(err, perr)
	}
	s.st.Observed = s.obs
	return s.st, true, err
}

// node returns the node to act on: view when it agrees with what the
// loader wrote there, else the node read from the API server (nil when it
// is gone). fresh says it was read.
func (l *PodLoader) node(ctx context.Context, owner identity.Owner, name string, view *corev1.Node) (node *corev1.Node, fresh bool, err error) {
	if view != nil && l.mem.trustNode(owner, view) {
		return view, false, nil
	}
	if view != nil {
		l.log.From(ctx).V(1).Info("node view is older than our writes; reading it", "node", name, "owner", owner.String())
	}
	n, err := l.readNode(ctx, owner, name)
	return n, true, err
}

// readNode reads a node from the API server and remembers the owner's keys
// on it; nil when it does not exist.
func (l *PodLoader) readNode(ctx context.Context, owner identity.Owner, name string) (*corev1.Node, error) {
	n, err := l.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading node %s: %w", name, err)
	}
	l.mem.setNode(owner, n, l.now())
	return n, nil
}

// workerPod picks the owner's worker Pod on node from the listed ones:
// the one of the expected name, or the newest one under another name
// (an older naming); the others go. A Pod the loader's memory
// contradicts is read from the API server.
func (l *PodLoader) workerPod(ctx context.Context, owner identity.Owner, ns, node string, pods []*corev1.Pod) (*corev1.Pod, error) {
	name := owner.WorkerPodName(node)
	var cur *corev1.Pod
	var errs []error
	for _, p := range pods {
		switch {
		case cur == nil:
			cur = p
		case p.Name == name || (cur.Name != name && p.CreationTimestamp.After(cur.CreationTimestamp.Time)):
			// Two workers for one node (a renamed Pod): keep the expected
			// one, or the newer.
			errs = append(errs, l.deletePod(ctx, owner, cur, false))
			cur = p
		default:
			errs = append(errs, l.deletePod(ctx, owner, p, false))
		}
	}
	if cur != nil && cur.Name != name {
		return cur, errors.Join(errs...)
	}
	if l.mem.trustPod(owner, name, cur) {
		return cur, errors.Join(errs...)
	}
	l.log.From(ctx).V(1).Info("worker pod view is older than our writes; reading it", "pod", name)
	fresh, _, err := l.readPod(ctx, owner, ns, name)
	return fresh, errors.Join(append(errs, err)...)
}

// readPod reads the worker Pod name of owner and remembers it; nil when
// there is none. foreign is set when the name is taken by a Pod that is
// not a worker of owner (which is then left alone).
func (l *PodLoader) readPod(ctx context.Context, owner identity.Owner, ns, name string) (pod *corev1.Pod, foreign bool, err error) {
	p, err := l.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		p = nil
	case err != nil:
		return nil, false, fmt.Errorf("reading worker pod %s/%s: %w", ns, name, err)
	case !owner.IsWorker(p.Labels):
		p, foreign = nil, true
	}
	l.mem.setPod(owner, name, p, l.now())
	return p, foreign, nil
}

// harvest records the result of a finished worker Pod and deletes it. The
// node is patched before the Pod is deleted, so a crash in between loses
// nothing: the next pass finds the Pod again.
func (s *nodeSync) harvest(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	switch {
	case pod.DeletionTimestamp != nil:
		return pod, nil
	case pod.Status.Phase == corev1.PodSucceeded:
		if Action(pod.Labels[s.owner.ActionLabel()]) == ActionLoad {
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
		if err := s.l.deletePod(ctx, s.owner, pod, false); err != nil {
			return nil, err
		}
		s.workers.running--
		return nil, nil
	case pod.Status.Phase == corev1.PodFailed:
		d := diagnose(pod, s.l.now(), 0)
		s.fail(d.reason, d.message)
		s.st.RequeueAfter = s.l.retryAfter
		if err := s.l.deletePod(ctx, s.owner, pod, false); err != nil {
			return pod, err
		}
		s.workers.running--
		return nil, errStop
	}
	return pod, nil
}

// errStop ends a node's pass early without an error.
var errStop = errors.New("stop")

func (s *nodeSync) withPod(ctx context.Context, pod *corev1.Pod) error {
	action := Action(pod.Labels[s.owner.ActionLabel()])
	d := diagnose(pod, s.l.now(), s.l.stuckAfter)
	if action == ActionUnload {
		if pod.DeletionTimestamp == nil && s.obs != nil {
			// An unloader runs what was loaded; its template changes only
			// with the loader's options (a new worker image, say). As KMM
			// does, one that fails with an outdated template is replaced.
			if done, err := s.replaceOutdated(ctx, pod, ActionUnload, s.obs.Request(), d, "its template is outdated"); done {
				return err
			}
		}
		s.progress(PhaseUnloading, ReasonUnloading, fmt.Sprintf("worker pod %s is unloading the module", pod.Name), d, pod)
		return nil
	}
	if pod.DeletionTimestamp != nil {
		s.progress(PhaseLoading, ReasonLoading, fmt.Sprintf("waiting for the outdated worker pod %s to go", pod.Name), diagnosis{}, nil)
		return nil
	}
	if s.desired == nil {
		s.progress(PhaseUnloading, ReasonUnloading, "stopping the loader: the module is no longer wanted here", diagnosis{}, nil)
		s.st.RequeueAfter = 2 * time.Second
		return s.l.deletePod(ctx, s.owner, pod, true)
	}
	if done, err := s.replaceOutdated(ctx, pod, ActionLoad, *s.desired, d, "the module's config changed"); done {
		return err
	}
	s.progress(PhaseLoading, ReasonLoading, fmt.Sprintf("worker pod %s is loading the module", pod.Name), d, pod)
	return nil
}

// replaceOutdated deletes pod when it is outdated against the worker Pod
// for action and r, saying why. done is set when it deleted pod or could
// not tell (err says why); the caller then stops there.
func (s *nodeSync) replaceOutdated(ctx context.Context, pod *corev1.Pod, action Action, r PodRequest, d diagnosis, why string) (done bool, err error) {
	if !replaceable(pod, d) {
		return false, nil
	}
	hash, err := s.templateHash(action, r)
	if err != nil {
		s.fail(ReasonInvalidRequest, err.Error())
		return true, err
	}
	if pod.Annotations[AnnotationWorkerHash] == hash {
		return false, nil
	}
	phase, reason := phaseOf(action)
	s.progress(phase, reason, fmt.Sprintf("replacing worker pod %s: %s", pod.Name, why), diagnosis{}, nil)
	s.st.RequeueAfter = 2 * time.Second
	return true, s.l.deletePod(ctx, s.owner, pod, true)
}

// phaseOf is the phase and reason of a node while a worker does action.
func phaseOf(action Action) (Phase, string) {
	if action == ActionUnload {
		return PhaseUnloading, ReasonUnloading
	}
	return PhaseLoading, ReasonLoading
}

// replaceable reports whether a worker Pod whose template is outdated is
// replaced: it is failing, stuck or has not started, so nothing is cut
// short. KMM replaces an outdated worker only after its container
// restarted, so one that cannot even pull its image stays forever.
func replaceable(pod *corev1.Pod, d diagnosis) bool {
	started := len(pod.Status.ContainerStatuses) > 0 && pod.Status.ContainerStatuses[0].State.Running != nil
	return d.failing || d.stuck || !started
}

// templateHash is the AnnotationWorkerHash of the worker Pod for action
// and r on this node. The loader remembers it per worker Pod name and
// request, so a Pod that waits pass after pass for the kubelet costs one
// template (and its YAML), not one a pass.
func (s *nodeSync) templateHash(action Action, r PodRequest) (string, error) {
	name := s.owner.WorkerPodName(s.node.Name)
	key, kerr := templateKey(action, r)
	if kerr == nil {
		if h, ok := s.l.mem.template(s.owner, name, key); ok {
			return h, nil
		}
	}
	want, err := s.podFor(action, r)
	if err != nil {
		return "", err
	}
	h := want.Annotations[AnnotationWorkerHash]
	if kerr == nil {
		s.l.mem.setTemplate(s.owner, name, key, h)
	}
	return h, nil
}

// templateKey says all of what a worker Pod is made from that changes
// between passes (the loader's options do not): the action and the
// request, every field of it.
func templateKey(action Action, r PodRequest) (string, error) {
	r.Action = action
	b, err := json.Marshal(r)
	return string(b), err
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
	case !sameConfig(&s.obs.Config, &s.desired.Config):
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
	r.Identity, r.PodNamespace = s.req.Identity, s.req.podNamespace()
	pod, err := workerPod(r, s.l.workerImage, s.l.pod)
	if err != nil {
		return nil, err
	}
	if s.req.Owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*s.req.Owner}
	}
	return pod, nil
}

func (s *nodeSync) create(ctx context.Context, action Action, r PodRequest) error {
	phase, reason := phaseOf(action)
	if s.workers.full() {
		// Checked before the Pod is built: a node that waits costs no
		// worker template (and its config's YAML) on every pass.
		s.set(phase, metav1.ConditionFalse, reason, fmt.Sprintf("waiting to %s the module: %d worker pods of %s are running, the most at once (WithMaxWorkers)",
			action, s.workers.running, s.owner))
		s.st.RequeueAfter = 2 * time.Second
		return nil
	}
	pod, err := s.podFor(action, r)
	if err != nil {
		s.fail(ReasonInvalidRequest, err.Error())
		return err
	}
	created, err := s.l.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		// The views lag behind the Pod, or an old one is still going.
		existing, foreign, err := s.l.readPod(ctx, s.owner, pod.Namespace, pod.Name)
		if err != nil {
			s.fail(ReasonWorkerFailed, err.Error())
			return err
		}
		if foreign {
			s.fail(ReasonNameConflict, fmt.Sprintf("pod %s/%s exists and is not a worker of %s: remove it, or give each operator its own identity",
				pod.Namespace, pod.Name, s.owner))
			s.st.RequeueAfter = s.l.retryAfter
			return nil
		}
		s.taken = existing
		s.set(phase, metav1.ConditionFalse, reason, fmt.Sprintf("waiting for worker pod %s", pod.Name))
		s.st.RequeueAfter = 2 * time.Second
		return nil
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
		s.fail(ReasonPodRejected, fmt.Sprintf("the API server refused worker pod %s: %v", pod.Name, err))
		return fmt.Errorf("creating worker pod %s/%s: %w", pod.Namespace, pod.Name, err)
	case err != nil:
		s.fail(ReasonWorkerFailed, fmt.Sprintf("creating worker pod %s: %v", pod.Name, err))
		return fmt.Errorf("creating worker pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	s.l.mem.created(s.owner, created, s.l.now())
	if key, err := templateKey(action, r); err == nil {
		s.l.mem.setTemplate(s.owner, pod.Name, key, pod.Annotations[AnnotationWorkerHash])
	}
	s.workers.running++
	s.l.log.From(ctx).Info("created worker pod", "pod", pod.Name, "node", s.node.Name, "action", action)
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
	key := s.workers.keys.observed
	s.obs = obs
	if obs == nil {
		s.setAnnotation(key, nil)
		return
	}
	raw, _ := json.Marshal(obs) // plain data: cannot fail
	v := string(raw)
	s.setAnnotation(key, &v)
}

// setAnnotation makes a pending change of the node annotation k (nil
// deletes it).
func (s *nodeSync) setAnnotation(k string, v *string) {
	if s.annots == nil {
		s.annots = map[string]*string{}
	}
	s.annots[k] = v
}

// patchNode applies pending annotation changes and brings the ready labels
// in line with the observed state, emitting KMM's events when the ready
// label appears or goes. It writes only when something changes.
func (s *nodeSync) patchNode(ctx context.Context) error {
	ready := s.desired != nil && s.obs != nil && sameConfig(&s.obs.Config, &s.desired.Config)
	readyKey, versionKey := s.workers.keys.ready, s.workers.keys.version
	_, wasReady := s.node.Labels[readyKey]
	if s.outdated {
		// What is desired is outdated: the labels stay, and go only when
		// nothing is loaded any more.
		ready = wasReady && s.obs != nil
	}
	// The changes are made only where the node differs: a steady pass
	// allocates nothing here.
	var labels, annots map[string]any
	switch {
	case s.outdated && ready:
	case ready:
		empty := ""
		change(&labels, s.node.Labels, readyKey, &empty)
		if v := s.obs.Version; v != "" {
			change(&labels, s.node.Labels, versionKey, &v)
		} else {
			change(&labels, s.node.Labels, versionKey, nil)
		}
	default:
		change(&labels, s.node.Labels, readyKey, nil)
		change(&labels, s.node.Labels, versionKey, nil)
	}
	if old := s.workers.keys.deprecated; old != "" {
		change(&labels, s.node.Labels, old, nil)
	}
	for k, v := range s.annots {
		change(&annots, s.node.Annotations, k, v)
	}
	s.annots = nil
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
	s.l.mem.setNode(s.owner, updated, s.l.now())
	if s.l.recorder != nil && ready != wasReady {
		ref := &corev1.ObjectReference{Kind: "Node", Name: updated.Name, UID: updated.UID, APIVersion: "v1"}
		if ready {
			s.l.recorder.AnnotatedEventf(ref, s.owner.EventAnnotations(), corev1.EventTypeNormal, "ModuleLoaded", "%s loaded into the kernel", s.owner)
		} else {
			s.l.recorder.AnnotatedEventf(ref, s.owner.EventAnnotations(), corev1.EventTypeNormal, "ModuleUnloaded", "%s unloaded from the kernel", s.owner)
		}
	}
	return nil
}

// change adds k to the JSON merge patch map *patch when want (nil: no
// entry) differs from what have holds, making the map on the first change.
func change(patch *map[string]any, have map[string]string, k string, want *string) {
	cur, ok := have[k]
	switch {
	case want == nil && ok:
	case want != nil && (!ok || cur != *want):
	default:
		return
	}
	if *patch == nil {
		*patch = map[string]any{}
	}
	if want == nil {
		(*patch)[k] = nil
	} else {
		(*patch)[k] = *want
	}
}

// deletePod deletes a worker Pod of owner, that one only (its UID) and,
// when unchanged is set, only as the caller saw it (its resource version):
// a decision taken on an outdated view never deletes a newer Pod. A Pod
// already gone or replaced is not an error; the loader reads it again
// next time.
func (l *PodLoader) deletePod(ctx context.Context, owner identity.Owner, pod *corev1.Pod, unchanged bool) error {
	pre := &metav1.Preconditions{UID: &pod.UID}
	if unchanged && pod.ResourceVersion != "" {
		pre.ResourceVersion = &pod.ResourceVersion
	}
	err := l.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: pre})
	switch {
	case err == nil || apierrors.IsNotFound(err):
		l.mem.deleted(owner, pod, l.now())
		l.log.From(ctx).V(1).Info("deleted worker pod", "pod", pod.Name, "node", pod.Spec.NodeName)
		return nil
	case apierrors.IsConflict(err):
		l.mem.changed(owner, pod.Name, l.now())
		return nil
	}
	return fmt.Errorf("deleting worker pod %s/%s: %w", pod.Namespace, pod.Name, err)
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
