package loader

import (
	"encoding/json"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// maxShared bounds the shared records (records without their boot ID)
// the cache keeps. Past it the table starts again: sharing saves memory
// and is never needed for correctness.
const maxShared = 4096

// recordCache holds each owner's record on each node (the observed
// annotation) as last decoded, so a steady pass, which finds every
// annotation as it was, decodes none. Records that differ only in the
// boot ID, as those of one Module on one kernel do, share one decoded
// record without it; what a node adds is its boot ID. The shared records
// are never modified.
type recordCache struct {
	mu      sync.Mutex
	byKey   map[string]map[string]decoded // annotation key → node name → record
	shared  map[string]*Observed          // a record without its boot ID → the first decoded
	decodes int                           // annotation values decoded, for tests
}

// decoded is one annotation value and what it decodes to: the shared
// record and the node's boot ID, or the error.
type decoded struct {
	raw    string
	shared *Observed
	bootID string
	err    error
}

// observed is the record d decodes to, a copy of its own for the caller.
func (d decoded) observed() (*Observed, error) {
	if d.err != nil {
		return nil, d.err
	}
	obs := *d.shared
	obs.BootID = d.bootID
	return &obs, nil
}

func newRecordCache() recordCache {
	return recordCache{byKey: map[string]map[string]decoded{}, shared: map[string]*Observed{}}
}

// observed returns the record under key on node: nil when there is none,
// an error naming the node and key when it does not parse. A value is
// decoded once, however often it is asked for.
func (c *recordCache) observed(node *corev1.Node, key string) (*Observed, error) {
	raw, ok := node.Annotations[key]
	c.mu.Lock()
	byNode := c.byKey[key]
	if !ok {
		if byNode != nil {
			delete(byNode, node.Name)
		}
		c.mu.Unlock()
		return nil, nil
	}
	if d, ok := byNode[node.Name]; ok && d.raw == raw {
		c.mu.Unlock()
		return d.observed()
	}
	c.mu.Unlock()
	d := decoded{raw: raw}
	obs, err := decodeObserved(node.Name, key, raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.decodes++
	if err != nil {
		d.err = err
	} else {
		d.shared, d.bootID = c.share(obs), obs.BootID
	}
	if c.byKey[key] == nil {
		c.byKey[key] = map[string]decoded{}
	}
	c.byKey[key][node.Name] = d
	return d.observed()
}

// share returns the record that obs is apart from its boot ID, made once
// for all the records that agree on the rest; c.mu is held.
func (c *recordCache) share(obs *Observed) *Observed {
	bare := *obs
	bare.BootID = ""
	k, err := json.Marshal(bare)
	if err != nil {
		return &bare // plain data: cannot fail
	}
	if first, ok := c.shared[string(k)]; ok {
		return first
	}
	if len(c.shared) >= maxShared {
		clear(c.shared)
	}
	c.shared[string(k)] = &bare
	return &bare
}

// forget drops the records under key of the nodes that keep does not
// hold (nodes that are gone), so the cache follows the cluster.
func (c *recordCache) forget(key string, keep func(node string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.byKey[key] {
		if !keep(n) {
			delete(c.byKey[key], n)
		}
	}
	if len(c.byKey[key]) == 0 {
		delete(c.byKey, key)
	}
}

// decodeObserved parses a record, naming the node and key when it cannot.
func decodeObserved(node, key, raw string) (*Observed, error) {
	obs := new(Observed)
	if err := json.Unmarshal([]byte(raw), obs); err != nil {
		return nil, fmt.Errorf("node %s: annotation %s: %w", node, key, err)
	}
	return obs, nil
}
