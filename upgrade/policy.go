// Package upgrade is kmmkit's automatic rolling-upgrade policy (an
// extension: KMM has none, only its ordered upgrade driven by node
// labels). When the desired image or version of a loaded module changes,
// the Reconciler (kmm.WithRollingUpgrade) moves the nodes to it itself, a
// few at a time: per node it optionally cordons, waits for Pods to finish,
// evicts (or deletes) the Pods that use the device, waits for the device
// plugin to stop, lets the loader unload the old module and load the new
// one, validates, lets the device plugin start again and uncordons the
// node if it cordoned it.
//
// The package is pure: Policy (with Go-zero-safe defaults), the per-node
// state machine Step, and the slot arithmetic Admit. Every fact they
// decide on is passed in, and every decision is returned; the progress of
// a node lives on the node (a state label and a record annotation, see
// identity.Owner.UpgradeStateLabel), so a restarted controller resumes
// where the last one was.
package upgrade

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Defaults of the zero Policy.
const (
	// DefaultWaitTimeout bounds PodWait when its Timeout is zero.
	DefaultWaitTimeout = time.Hour
	// DefaultEvictTimeout bounds Eviction when its Timeout is zero.
	DefaultEvictTimeout = 10 * time.Minute
	// DefaultValidationTimeout bounds Validation when its Timeout is zero.
	DefaultValidationTimeout = 10 * time.Minute
)

// Policy says how a rolling upgrade moves nodes. The zero Policy is safe:
// one node at a time, at most one targeted node without the module, no
// cordon, no waiting, no eviction, no validation Pods, and the first
// failed node pauses the rollout.
type Policy struct {
	// MaxParallel is how many nodes may be in the middle of an upgrade at
	// once; 0 means 1 (never "unlimited").
	MaxParallel int
	// MaxUnavailable is how many of the targeted nodes may be without the
	// module (or cordoned, or not Ready) at once: a number, or a
	// percentage of the targeted nodes rounded down; nil, 0 and a
	// percentage that rounds to 0 all mean 1, so a rollout always moves.
	MaxUnavailable *intstr.IntOrString
	// Cordon cordons a node before its Pods are evicted, and uncordons it
	// when it is done if — and only if — the upgrade cordoned it.
	Cordon bool
	// WaitForPods, when set, waits for the Pods it selects on the node to
	// finish before going on.
	WaitForPods *PodWait
	// Evict, when set, evicts the Pods it selects on the node (the Pods
	// that use the device) through the Eviction API, honouring
	// PodDisruptionBudgets, before the module is unloaded.
	Evict *Eviction
	// Validation, when set, waits after the new load for the Pods it
	// selects on the node to be Ready.
	Validation *Validation
	// FailureThreshold is how many failed nodes pause the rollout (no
	// node is admitted any more until they are fixed); 0 means 1.
	FailureThreshold int
}

// PodWait waits for Pods to finish.
type PodWait struct {
	// Selector is a label selector (labels.Parse syntax) of the Pods, in
	// any namespace, on the node; required.
	Selector string
	// Timeout is how long to wait before going on regardless; 0 means
	// DefaultWaitTimeout.
	Timeout time.Duration
}

// Eviction removes the Pods that use the device.
type Eviction struct {
	// Selector is a label selector of the Pods, in any namespace, on the
	// node; required.
	Selector string
	// Delete deletes the Pods instead of evicting them (ignores
	// PodDisruptionBudgets).
	Delete bool
	// Timeout is how long the Pods may take to go (a budget that never
	// allows the eviction included) before the node fails; 0 means
	// DefaultEvictTimeout.
	Timeout time.Duration
}

// Validation checks a node after the new load.
type Validation struct {
	// Selector is a label selector of the validation Pods, in any
	// namespace, on the node; at least one must exist and all be Ready.
	// Required.
	Selector string
	// Timeout is how long they may take before the node fails; 0 means
	// DefaultValidationTimeout.
	Timeout time.Duration
}

// Validate reports what makes p unusable, naming the field.
func (p Policy) Validate() error {
	if p.MaxParallel < 0 {
		return fmt.Errorf("upgrade policy: MaxParallel %d: must not be negative", p.MaxParallel)
	}
	if p.FailureThreshold < 0 {
		return fmt.Errorf("upgrade policy: FailureThreshold %d: must not be negative", p.FailureThreshold)
	}
	if u := p.MaxUnavailable; u != nil {
		v, err := intstr.GetScaledValueFromIntOrPercent(u, 100, false)
		if err != nil {
			return fmt.Errorf("upgrade policy: MaxUnavailable %q: %w", u.String(), err)
		}
		if v < 0 || (u.Type == intstr.String && v > 100) {
			return fmt.Errorf("upgrade policy: MaxUnavailable %q: must be between 0 and 100%% or a non-negative number", u.String())
		}
	}
	check := func(field, sel string, timeout time.Duration) error {
		if sel == "" {
			return fmt.Errorf("upgrade policy: %s.Selector: required", field)
		}
		if _, err := labels.Parse(sel); err != nil {
			return fmt.Errorf("upgrade policy: %s.Selector %q: %w", field, sel, err)
		}
		if timeout < 0 {
			return fmt.Errorf("upgrade policy: %s.Timeout %v: must not be negative", field, timeout)
		}
		return nil
	}
	if w := p.WaitForPods; w != nil {
		if err := check("WaitForPods", w.Selector, w.Timeout); err != nil {
			return err
		}
	}
	if e := p.Evict; e != nil {
		if err := check("Evict", e.Selector, e.Timeout); err != nil {
			return err
		}
	}
	if v := p.Validation; v != nil {
		if err := check("Validation", v.Selector, v.Timeout); err != nil {
			return err
		}
	}
	return nil
}

// maxParallel is MaxParallel with its default.
func (p Policy) maxParallel() int { return max(p.MaxParallel, 1) }

// failureThreshold is FailureThreshold with its default.
func (p Policy) failureThreshold() int { return max(p.FailureThreshold, 1) }

// MaxUnavailableOf is how many of targeted nodes may be unavailable at
// once under p: at least 1.
func (p Policy) MaxUnavailableOf(targeted int) int {
	if p.MaxUnavailable == nil {
		return 1
	}
	v, err := intstr.GetScaledValueFromIntOrPercent(p.MaxUnavailable, targeted, false)
	if err != nil {
		return 1 // Validate refuses it
	}
	return max(v, 1)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
