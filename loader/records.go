package loader

import (
	"encoding/json"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// maxShared bounds the distinct records (apart from the boot ID) that
// decoded records share their config with. Past it the table starts
// again: sharing saves memory and is never needed for correctness.
const maxShared = 4096

// recordCache holds each owner's record on each node (the observed
// annotation) as last decoded, so a steady pass, which finds every
// annotation as it was, decodes none. Records that differ only in the
// boot ID, as those of one Module on one kernel do, share one decoded
// config and tolerations. The decoded values are never modified.
type recordCache struct {
	mu     sync.Mutex
	byKey  map[string]map[string]decoded // annotation key → node name → record
	shared map[string]*Observed          // a record without its boot ID → the first decoded
}

// decoded is one annotation value and what it decodes to.
type decoded struct {
	raw string
	obs *Observed
	err error
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
		return d.obs, d.err
	}
	c.mu.Unlock()
	obs, err := decodeObserved(node.Name, key, raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		obs = c.share(obs)
	}
	if c.byKey[key] == nil {
		c.byKey[key] = map[string]decoded{}
	}
	c.byKey[key][node.Name] = decoded{raw: raw, obs: obs, err: err}
	return obs, err
}

// share points obs's config, pull secret and tolerations at those of an
// earlier record with the same content apart from the boot ID; c.mu is
// held.
func (c *recordCache) share(obs *Observed) *Observed {
	bare := *obs
	bare.BootID = ""
	k, err := json.Marshal(bare)
	if err != nil {
		return obs // plain data: cannot fail
	}
	if first, ok := c.shared[string(k)]; ok {
		obs.Config, obs.ImageRepoSecret, obs.Tolerations = first.Config, first.ImageRepoSecret, first.Tolerations
		return obs
	}
	if len(c.shared) >= maxShared {
		clear(c.shared)
	}
	c.shared[string(k)] = obs
	return obs
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
