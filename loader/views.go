package loader

import (
	"hash/maphash"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kmmkit/kmmkit/identity"
)

// forgetAfter is how long the loader remembers a worker Pod it deleted, or
// that it cleared its keys from a node. A view older than that (no
// informer lags by minutes) could make it act on what it undid.
const forgetAfter = 10 * time.Minute

// memory is what a PodLoader knows for certain about each owner's node
// keys and worker Pods: what it last wrote to, or read fresh from, the API
// server. Nodes and Pods come from views that may lag (an informer's
// lister); a view that disagrees with the memory is older than the
// loader's own writes, or was changed by someone else, and is read again
// from the API server before anything is done on it. The memory needs no
// ordering of resource versions: it compares what the view holds with
// what was written.
type memory struct {
	mu        sync.Mutex
	owners    map[identity.Owner]*ownerMemory // by ownerOf
	seed      maphash.Seed                    // of the node fingerprints
	lastSweep time.Time
	records   recordCache
}

type ownerMemory struct {
	keys      ownerKeys              // the owner's node keys, made once
	nodes     map[string]*nodeMemory // by node name
	pods      map[string]*podMemory  // by worker Pod name
	templates map[string]template    // by worker Pod name
}

// template is the worker hash of the Pod made for a request (templateKey).
type template struct{ key, hash string }

// nodeMemory is the owner's keys on a node as last written or read.
type nodeMemory struct {
	uid  types.UID
	keys uint64 // fingerprint of the owner's labels and annotation
	none bool   // the node holds none of them
	at   time.Time
}

// podMemory is a worker Pod as last created, deleted or read.
type podMemory struct {
	exists   bool
	uid      types.UID
	terminal bool      // it is known to have finished (a final phase)
	deleted  types.UID // the Pod this loader last deleted under the name
	dirty    bool      // it changed since it was last read: read it again
	at       time.Time
}

func newMemory() *memory {
	return &memory{owners: map[identity.Owner]*ownerMemory{}, seed: maphash.MakeSeed(), records: newRecordCache()}
}

// ownerOf is the map key of o: KMM's identity has one spelling.
func ownerOf(o identity.Owner) identity.Owner {
	if o.Domain.IsKMM() {
		o.Domain = identity.Domain{}
	}
	return o
}

// owner returns what is remembered of o; m.mu is held.
func (m *memory) owner(o identity.Owner) *ownerMemory {
	o = ownerOf(o)
	om := m.owners[o]
	if om == nil {
		om = &ownerMemory{keys: keysOf(o), nodes: map[string]*nodeMemory{}, pods: map[string]*podMemory{}, templates: map[string]template{}}
		m.owners[o] = om
	}
	return om
}

// keys returns o's node keys, made once per owner rather than per node.
func (m *memory) keys(o identity.Owner) ownerKeys {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owner(o).keys
}

// fingerprint sums the owner's keys on node; none is set when the node
// holds none of them. It allocates nothing: a steady pass computes one per
// node and owner.
func fingerprint(seed maphash.Seed, node *corev1.Node, k ownerKeys) (sum uint64, none bool) {
	var h maphash.Hash
	h.SetSeed(seed)
	none = true
	for _, kv := range [...]struct {
		m map[string]string
		k string
	}{{node.Annotations, k.observed}, {node.Labels, k.ready}, {node.Labels, k.version}} {
		v, ok := kv.m[kv.k]
		if ok {
			none = false
			h.WriteByte(1)
			h.WriteString(v)
		}
		h.WriteByte(0)
	}
	return h.Sum64(), none
}

// trustNode reports whether view may be acted on for o: the loader knows
// nothing of the node, or the view holds what it knows.
func (m *memory) trustNode(o identity.Owner, view *corev1.Node) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	om := m.owner(o)
	nm := om.nodes[view.Name]
	if nm == nil {
		return true
	}
	sum, _ := fingerprint(m.seed, view, om.keys)
	return nm.uid == view.UID && nm.keys == sum
}

// nodesOf returns the nodes the loader remembers for o.
func (m *memory) nodesOf(o identity.Owner) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.owner(o).nodes {
		out = append(out, n)
	}
	return out
}

// setNode records node, as written or read fresh.
func (m *memory) setNode(o identity.Owner, node *corev1.Node, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	om := m.owner(o)
	sum, none := fingerprint(m.seed, node, om.keys)
	om.nodes[node.Name] = &nodeMemory{uid: node.UID, keys: sum, none: none, at: now}
}

func (m *memory) forgetNode(o identity.Owner, node string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.owner(o).nodes, node)
}

// trustPod reports whether view (nil: no Pod) may be acted on as the
// worker Pod name of o.
func (m *memory) trustPod(o identity.Owner, name string, view *corev1.Pod) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	pm := m.owner(o).pods[name]
	switch {
	case pm == nil:
		return true
	case pm.dirty || pm.exists != (view != nil):
		return false
	case view == nil:
		return true
	case view.UID != pm.uid:
		return false
	case pm.terminal && !finished(view):
		return false // a view from before it finished
	case view.UID == pm.deleted && view.DeletionTimestamp == nil:
		return false // a view from before it was deleted
	}
	return true
}

// setPod records the worker Pod name of o as created or read (nil: none).
func (m *memory) setPod(o identity.Owner, name string, pod *corev1.Pod, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	om := m.owner(o)
	pm := om.pods[name]
	if pm == nil {
		pm = &podMemory{}
		om.pods[name] = pm
	}
	pm.exists, pm.uid, pm.terminal, pm.dirty, pm.at = pod != nil, "", false, false, now
	if pod != nil {
		pm.uid, pm.terminal = pod.UID, finished(pod)
	}
}

// created records a worker Pod this loader created: the name was free, so
// no Pod it deleted before is left under it.
func (m *memory) created(o identity.Owner, pod *corev1.Pod, now time.Time) {
	m.setPod(o, pod.Name, pod, now)
	m.mu.Lock()
	m.owner(o).pods[pod.Name].deleted = ""
	m.mu.Unlock()
}

// deleted records that this loader deleted pod: it is gone or going.
func (m *memory) deleted(o identity.Owner, pod *corev1.Pod, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	om := m.owner(o)
	om.pods[pod.Name] = &podMemory{deleted: pod.UID, at: now}
	delete(om.templates, pod.Name)
}

// template returns the worker hash remembered for the Pod name of o made
// for key.
func (m *memory) template(o identity.Owner, name, key string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.owner(o).templates[name]
	return t.hash, ok && t.key == key
}

// setTemplate remembers the worker hash of the Pod name of o made for key.
func (m *memory) setTemplate(o identity.Owner, name, key, hash string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owner(o).templates[name] = template{key: key, hash: hash}
}

// changed records that the worker Pod name of o changed since it was read.
func (m *memory) changed(o identity.Owner, name string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	om := m.owner(o)
	if pm := om.pods[name]; pm != nil {
		pm.dirty, pm.at = true, now
		return
	}
	om.pods[name] = &podMemory{dirty: true, at: now}
}

// sweep forgets, once per forgetAfter, what no view can contradict any
// more: nodes cleared of an owner's keys and Pods deleted longer ago.
// What is still loaded is remembered as long as it is.
func (m *memory) sweep(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.lastSweep) < forgetAfter {
		return
	}
	m.lastSweep = now
	for k, om := range m.owners {
		for n, nm := range om.nodes {
			if nm.none && now.Sub(nm.at) > forgetAfter {
				delete(om.nodes, n)
			}
		}
		for n, pm := range om.pods {
			if !pm.exists && now.Sub(pm.at) > forgetAfter {
				delete(om.pods, n)
			}
		}
		for n := range om.templates {
			if pm := om.pods[n]; pm == nil || !pm.exists {
				delete(om.templates, n) // a Pod that is gone
			}
		}
		if len(om.nodes) == 0 && len(om.pods) == 0 {
			delete(m.owners, k)
		}
	}
}

// finished reports whether pod reached a final phase, which it never
// leaves.
func finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}
