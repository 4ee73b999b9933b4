package upgrade

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/identity"
)

// State is a node's place in a rolling upgrade: the value of its state
// label (identity.Owner.UpgradeStateLabel). A node without the label has
// never needed an upgrade.
type State string

// The states, in the order a node goes through them.
const (
	// None: no upgrade has touched the node (no label).
	None State = ""
	// Required: the loaded module differs from the desired one; the node
	// waits for a slot (a node with the skip label waits for ever).
	Required State = "upgrade-required"
	// Cordon: admitted; the node is cordoned if the policy says so.
	Cordon State = "cordon-required"
	// WaitForPods: waiting for the Pods of Policy.WaitForPods to finish.
	WaitForPods State = "wait-for-pods-required"
	// Evict: evicting (or deleting) the Pods of Policy.Evict.
	Evict State = "pod-eviction-required"
	// StopDevicePlugin: waiting for the device plugin Pod to leave.
	StopDevicePlugin State = "device-plugin-stop-required"
	// Load: the loader unloads the old module and loads the new one.
	Load State = "module-update-required"
	// Validate: the new module is loaded; waiting for the validation Pods.
	Validate State = "validation-required"
	// Uncordon: the device plugin may start again; the node is uncordoned
	// if the upgrade cordoned it.
	Uncordon State = "uncordon-required"
	// Done: the node runs the desired module.
	Done State = "upgrade-done"
	// Failed: a step failed (the record's message says which and why);
	// the node holds no slot, and Policy.FailureThreshold failed nodes
	// pause the rollout.
	Failed State = "upgrade-failed"
)

// States lists every state (None excluded) in order.
var States = []State{Required, Cordon, WaitForPods, Evict, StopDevicePlugin, Load, Validate, Uncordon, Done, Failed}

// Known reports whether s is a state of this package.
func (s State) Known() bool {
	if s == None {
		return true
	}
	for _, k := range States {
		if s == k {
			return true
		}
	}
	return false
}

// InProgress reports whether a node in s has been admitted and is not
// finished: it holds a slot.
func (s State) InProgress() bool {
	switch s {
	case Cordon, WaitForPods, Evict, StopDevicePlugin, Load, Validate, Uncordon:
		return true
	}
	return false
}

// LoadsNew reports whether the loader is given the new module on a node in
// s (and the old one kept before).
func (s State) LoadsNew() bool { return s == Load || s == Validate || s == Uncordon }

// DevicePluginHeld reports whether the device plugin must not run on a
// node in s: from the device-plugin stop until the node is validated, and
// while it is failed.
func (s State) DevicePluginHeld() bool {
	return s == StopDevicePlugin || s == Load || s == Validate || s == Failed
}

// Record is what the record annotation holds (JSON), so that a restarted
// controller resumes: the step's start, whether the upgrade cordoned the
// node, which step failed, and the last message.
type Record struct {
	// Target identifies the desired module the node is moving to
	// (Target of the caller's choosing: a hash of config and version).
	Target string `json:"target,omitempty"`
	// Since is when the current step began (the Reconciler's clock).
	Since time.Time `json:"since,omitzero"`
	// Cordoned is set when the upgrade cordoned the node (and so must
	// uncordon it); a node that was cordoned already stays cordoned.
	Cordoned bool `json:"cordoned,omitempty"`
	// FailedIn is the step a failed node failed in.
	FailedIn State `json:"failedIn,omitempty"`
	// Message is the last thing said about the node.
	Message string `json:"message,omitempty"`
}

// ParseRecord reads a record annotation; "" is the zero Record.
func ParseRecord(s string) (Record, error) {
	var r Record
	if s == "" {
		return r, nil
	}
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return Record{}, fmt.Errorf("upgrade record: %w", err)
	}
	return r, nil
}

// String is the record as its annotation value.
func (r Record) String() string {
	b, _ := json.Marshal(r) // plain data: cannot fail
	return string(b)
}

// Node is what Step and Admit know of one targeted node.
type Node struct {
	// Name is the node's name.
	Name string
	// State and Record are read from the node.
	State  State
	Record Record
	// Skip: the node has the skip label.
	Skip bool
	// Target identifies the desired module on the node ("" when nothing
	// is desired there yet, an image still building, say).
	Target string
	// Loaded: a module of the owner is loaded on the node (in its
	// current kernel and boot).
	Loaded bool
	// Current: what is loaded is the desired module (config and version).
	Current bool
	// Ready: the node's Ready condition is True.
	Ready bool
	// Unschedulable: the node is cordoned.
	Unschedulable bool
	// LoadFailed, when not empty, is why the loader fails to load the
	// new module there.
	LoadFailed string
	// Pods are the Pods the current step waits for (running Pods of
	// WaitForPods, remaining Pods of Evict, device plugin Pods, or
	// validation Pods that are not Ready), by namespace/name; the caller
	// fills it for the node's step only.
	Pods []string
	// ValidationPods is how many validation Pods exist on the node.
	ValidationPods int
}

// Available reports whether the node counts as available: Ready,
// schedulable, with a module loaded and not in an upgrade.
func (n Node) Available() bool {
	return n.Ready && !n.Unschedulable && n.Loaded && !n.State.InProgress()
}

// outdated reports whether the node has a module loaded that is not the
// desired one.
func (n Node) outdated() bool { return n.Target != "" && n.Loaded && !n.Current }

// Action is what Step asks the caller to do to the node.
type Action string

// Actions.
const (
	// ActionCordon: set spec.unschedulable.
	ActionCordon Action = "Cordon"
	// ActionUncordon: clear spec.unschedulable.
	ActionUncordon Action = "Uncordon"
	// ActionEvict: evict (or delete) Node.Pods.
	ActionEvict Action = "Evict"
)

// Decision is what Step decided for one node.
type Decision struct {
	// State and Record are the node's new ones; Changed says they differ
	// from the node's (a write is due).
	State   State
	Record  Record
	Changed bool
	// Action is what to do to the node with the write ("" for nothing).
	Action Action
}

// Step is the state machine of one node: from what the node records and
// the facts observed now, its next state, record and action. It moves at
// most one step; admission (Required → Cordon) is Admit's, not Step's.
func Step(p Policy, n Node, now time.Time) Decision {
	d := Decision{State: n.State, Record: n.Record}
	move := func(to State, msg string) {
		d.State, d.Record.Since, d.Record.Message = to, now, msg
		if to != Failed {
			d.Record.FailedIn = ""
		}
	}
	elapsed := now.Sub(n.Record.Since)
	switch n.State {
	case None, Done:
		if n.outdated() {
			move(Required, "the desired module changed")
			d.Record.Target, d.Record.Cordoned = n.Target, false
		}
	case Required:
		switch {
		case n.Target == "":
			// Nothing is desired yet (an image being built): wait.
		case !n.Loaded || n.Current:
			// Reverted, or nothing is loaded any more: nothing to move.
			move(Done, "no outdated module on the node any more")
		case n.Skip:
			d.Record.Message = skipMessage
		}
		if n.Target != "" {
			d.Record.Target = n.Target
		}
	case Cordon:
		switch {
		case !p.Cordon:
			move(WaitForPods, "")
		case n.Unschedulable:
			move(WaitForPods, "the node was cordoned already: it stays cordoned")
		default:
			d.Action = ActionCordon
			d.Record.Cordoned = true
			move(WaitForPods, "cordoned")
		}
	case WaitForPods:
		switch {
		case p.WaitForPods == nil || len(n.Pods) == 0:
			move(Evict, "")
		case elapsed >= orDefault(p.WaitForPods.Timeout, DefaultWaitTimeout):
			move(Evict, fmt.Sprintf("gave up waiting for %s after %v", list(n.Pods), orDefault(p.WaitForPods.Timeout, DefaultWaitTimeout)))
		default:
			d.Record.Message = "waiting for " + list(n.Pods) + " to finish"
		}
	case Evict:
		switch {
		case p.Evict == nil || len(n.Pods) == 0:
			move(StopDevicePlugin, "")
		case elapsed >= orDefault(p.Evict.Timeout, DefaultEvictTimeout):
			move(Failed, fmt.Sprintf("%s still on the node after %v", list(n.Pods), orDefault(p.Evict.Timeout, DefaultEvictTimeout)))
			d.Record.FailedIn = Evict
		default:
			d.Action = ActionEvict
			d.Record.Message = "evicting " + list(n.Pods)
		}
	case StopDevicePlugin:
		if len(n.Pods) == 0 {
			move(Load, "")
		} else {
			d.Record.Message = "waiting for the device plugin " + list(n.Pods) + " to stop"
		}
	case Load:
		switch {
		case n.Current:
			move(Validate, "the new module is loaded")
		case n.LoadFailed != "":
			move(Failed, "loading the new module failed: "+n.LoadFailed)
			d.Record.FailedIn = Load
		default:
			d.Record.Message = "loading the new module"
		}
	case Validate:
		switch {
		case !n.Current:
			move(Load, "the loaded module is not the desired one any more")
		case p.Validation == nil:
			move(Uncordon, "")
		case n.ValidationPods > 0 && len(n.Pods) == 0:
			move(Uncordon, "validated")
		case elapsed >= orDefault(p.Validation.Timeout, DefaultValidationTimeout):
			why := "no validation pod on the node"
			if n.ValidationPods > 0 {
				why = list(n.Pods) + " not Ready"
			}
			move(Failed, fmt.Sprintf("validation failed after %v: %s", orDefault(p.Validation.Timeout, DefaultValidationTimeout), why))
			d.Record.FailedIn = Validate
		default:
			if n.ValidationPods == 0 {
				d.Record.Message = "waiting for a validation pod"
			} else {
				d.Record.Message = "waiting for " + list(n.Pods) + " to be Ready"
			}
		}
	case Uncordon:
		if n.Record.Cordoned && n.Unschedulable {
			d.Action = ActionUncordon
		}
		move(Done, "upgraded")
		d.Record.Cordoned = false
	case Failed:
		switch {
		case n.Target != "" && n.Target != n.Record.Target && n.outdated():
			// A new desired module: a new attempt.
			move(Required, "the desired module changed")
			d.Record.Target = n.Target
		case n.Record.FailedIn == Load && n.Current:
			// The loader's retry succeeded (the image was fixed, say).
			move(Validate, "the new module is loaded")
		}
	default:
		// An unknown value (written by hand): start over.
		move(None, "unknown state "+string(n.State))
		if n.outdated() {
			move(Required, "the desired module changed")
			d.Record.Target = n.Target
		}
	}
	d.Changed = d.State != n.State || d.Record != n.Record
	return d
}

const skipMessage = "the node has the skip label: it keeps the loaded module"

// list names at most five pods.
func list(pods []string) string {
	s := append([]string(nil), pods...)
	sort.Strings(s)
	if len(s) > 5 {
		return fmt.Sprintf("pods %s and %d more", strings.Join(s[:5], ", "), len(s)-5)
	}
	if len(s) == 1 {
		return "pod " + s[0]
	}
	return "pods " + strings.Join(s, ", ")
}

// DevicePluginHeld is how a device plugin controller learns where the plugin must
// not run now: the names of nodes whose state label for o says the plugin
// is held (State.DevicePluginHeld). It reads only the labels, so it needs
// no memory of the rollout and agrees with any restarted controller.
func DevicePluginHeld(o identity.Owner, nodes []*corev1.Node) map[string]bool {
	held := map[string]bool{}
	key := o.UpgradeStateLabel()
	for _, n := range nodes {
		if State(n.Labels[key]).DevicePluginHeld() {
			held[n.Name] = true
		}
	}
	return held
}
