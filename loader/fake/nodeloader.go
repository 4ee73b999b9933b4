// Package fake holds test doubles of the cluster side of the loader, for
// users' unit tests: NodeLoader, an in-memory loader.NodeLoader that
// records which module is loaded on which node. The in-memory kernel the
// native loader loads into is in loader/node/fake.
package fake

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
)

// NodeLoader is an in-memory loader.NodeLoader. Sync loads and unloads at
// once (or after a number of passes, see SetDelay), records every action
// in History, and fails where Fail says. It never touches a cluster and
// is safe for concurrent use.
type NodeLoader struct {
	mu       sync.Mutex
	loaded   map[nodeModule]*loader.Observed
	pending  map[nodeModule]int
	failures map[nodeModule]metav1.Condition
	delay    int
	history  []string
	syncs    int
	syncErr  error
}

// nodeModule is one owner on one node; owner is the owner's node
// annotation key, which is unique per identity, namespace and name.
type nodeModule struct{ node, owner string }

func key(node string, o identity.Owner) nodeModule { return nodeModule{node, o.ObservedAnnotation()} }

func kmmOwner(ns, module string) identity.Owner { return identity.Domain{}.Owner(ns, module) }

// what names an owner in History: ns/module for KMM's Modules, with the
// kind for other identities.
func what(o identity.Owner) string {
	if o.Domain.IsKMM() {
		return o.Ref()
	}
	return o.String()
}

var _ loader.NodeLoader = (*NodeLoader)(nil)

// NewNodeLoader returns a NodeLoader with nothing loaded anywhere.
func NewNodeLoader() *NodeLoader {
	return &NodeLoader{loaded: map[nodeModule]*loader.Observed{}, pending: map[nodeModule]int{},
		failures: map[nodeModule]metav1.Condition{}}
}

// SetDelay makes each load or unload take passes extra Syncs, during which
// the node reports Loading or Unloading, as worker Pods would.
func (f *NodeLoader) SetDelay(passes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = passes
}

// Fail makes loading KMM's Module ns/module on node fail with r
// (reason.WorkerFailed, reason.WorkerImagePullFailed, …) and message until
// Recover is called.
func (f *NodeLoader) Fail(node, ns, module string, r reason.Reason, message string) {
	f.FailFor(node, kmmOwner(ns, module), r, message)
}

// FailFor is Fail for an owner of any identity.
func (f *NodeLoader) FailFor(node string, o identity.Owner, r reason.Reason, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[key(node, o)] = metav1.Condition{Type: loader.ConditionLoaded,
		Status: metav1.ConditionFalse, Reason: string(r), Message: message}
}

// FailSync makes every Sync fail with err before it reports any node, as
// a PodLoader does when the API server refuses to list worker Pods; nil
// makes Sync work again. Nothing is loaded or unloaded while it fails.
func (f *NodeLoader) FailSync(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncErr = err
}

// Recover undoes Fail.
func (f *NodeLoader) Recover(node, ns, module string) { f.RecoverFor(node, kmmOwner(ns, module)) }

// RecoverFor undoes FailFor.
func (f *NodeLoader) RecoverFor(node string, o identity.Owner) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.failures, key(node, o))
}

// Reboot forgets everything loaded on node, as a reboot would.
func (f *NodeLoader) Reboot(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.loaded {
		if k.node == node {
			delete(f.loaded, k)
		}
	}
	f.history = append(f.history, "reboot "+node)
}

// LoadedOn returns, per node name, the config loaded for KMM's Module
// ns/module.
func (f *NodeLoader) LoadedOn(ns, module string) map[string]v1beta1.ModuleConfig {
	return f.LoadedFor(kmmOwner(ns, module))
}

// LoadedFor returns, per node name, the config loaded for an owner of any
// identity.
func (f *NodeLoader) LoadedFor(o identity.Owner) map[string]v1beta1.ModuleConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]v1beta1.ModuleConfig{}
	for k, obs := range f.loaded {
		if k.owner == o.ObservedAnnotation() {
			out[k.node] = obs.Config
		}
	}
	return out
}

// History returns every action in order, as "load <ns>/<module> on <node>
// (<image>)" and "unload <ns>/<module> from <node>" (with the kind before
// <ns>/<module> for an identity other than KMM's).
func (f *NodeLoader) History() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.history...)
}

// Syncs returns how many times Sync was called.
func (f *NodeLoader) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Sync implements loader.NodeLoader.
func (f *NodeLoader) Sync(ctx context.Context, req loader.SyncRequest) ([]loader.NodeState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("fake node loader: %w", err)
	}
	owner := req.Identity.Owner(req.Namespace, req.Module)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	if f.syncErr != nil {
		return nil, f.syncErr
	}
	known := map[string]bool{}
	for _, n := range req.Nodes {
		known[n.Name] = true
	}
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for n := range req.Desired {
		if !known[n] {
			return nil, fmt.Errorf("desired node %q is not in SyncRequest.Nodes", n)
		}
		add(n)
	}
	for k := range f.loaded {
		if k.owner == owner.ObservedAnnotation() && known[k.node] {
			add(k.node)
		}
	}
	sort.Strings(names)
	states := make([]loader.NodeState, 0, len(names))
	for _, n := range names {
		k := key(n, owner)
		want := req.Desired[n]
		if want == nil && req.Keep[n] {
			obs := f.loaded[k]
			if obs == nil {
				continue
			}
			keep := obs.Request()
			want = &keep
		}
		states = append(states, f.syncNode(k, owner, want))
	}
	return states, nil
}

func (f *NodeLoader) syncNode(k nodeModule, owner identity.Owner, want *loader.PodRequest) loader.NodeState {
	st := loader.NodeState{Node: k.node}
	obs := f.loaded[k]
	set := func(p loader.Phase, status metav1.ConditionStatus, r reason.Reason, msg string) {
		st.Phase = p
		st.Condition = metav1.Condition{Type: loader.ConditionLoaded, Status: status, Reason: string(r), Message: msg}
	}
	if want != nil && obs != nil && equality.Semantic.DeepEqual(obs.Config, want.Config) {
		st.Observed = obs
		set(loader.PhaseLoaded, metav1.ConditionTrue, reason.Loaded, "loaded")
		return st
	}
	if want == nil && obs == nil {
		set(loader.PhaseUnloaded, metav1.ConditionFalse, reason.Unloaded, "not loaded")
		return st
	}
	if c, ok := f.failures[k]; ok && want != nil {
		st.Phase, st.Condition, st.Observed = loader.PhaseFailed, c, obs
		return st
	}
	if f.pending[k] < f.delay {
		f.pending[k]++
		st.Observed = obs
		if want == nil {
			set(loader.PhaseUnloading, metav1.ConditionFalse, reason.Unloading, "unloading")
		} else {
			set(loader.PhaseLoading, metav1.ConditionFalse, reason.Loading, "loading")
		}
		return st
	}
	delete(f.pending, k)
	if obs != nil {
		f.history = append(f.history, fmt.Sprintf("unload %s from %s", what(owner), k.node))
		delete(f.loaded, k)
	}
	if want == nil {
		set(loader.PhaseUnloaded, metav1.ConditionFalse, reason.Unloaded, "unloaded")
		return st
	}
	obs = &loader.Observed{Config: *want.Config.DeepCopy(), Version: want.ModuleVersion,
		ServiceAccountName: want.ServiceAccountName, ImageRepoSecret: want.ImageRepoSecret, Tolerations: want.Tolerations}
	f.loaded[k] = obs
	f.history = append(f.history, fmt.Sprintf("load %s on %s (%s)", what(owner), k.node, want.Config.ContainerImage))
	st.Observed = obs
	set(loader.PhaseLoaded, metav1.ConditionTrue, reason.Loaded, "loaded")
	return st
}
