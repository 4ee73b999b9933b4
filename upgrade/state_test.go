package upgrade

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/identity"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// outdated is a Ready node with an old module loaded and t2 desired.
func outdated(s State) Node {
	return Node{Name: "n", State: s, Ready: true, Loaded: true, Target: "t2", Record: Record{Target: "t2", Since: t0}}
}

func current(s State) Node {
	n := outdated(s)
	n.Current = true
	return n
}

func TestStep(t *testing.T) {
	full := Policy{Cordon: true, WaitForPods: &PodWait{Selector: "job=x", Timeout: time.Minute},
		Evict: &Eviction{Selector: "app=gpu", Timeout: 2 * time.Minute}, Validation: &Validation{Selector: "app=val", Timeout: 3 * time.Minute}}
	with := func(n Node, f func(*Node)) Node { f(&n); return n }
	for _, c := range []struct {
		name    string
		p       Policy
		n       Node
		at      time.Duration // after the step began
		state   State
		action  Action
		msg     string
		changed bool
	}{
		{"steady node: nothing", full, with(current(None), func(n *Node) { n.Record = Record{} }), 0, None, "", "", false},
		{"nothing loaded: not an upgrade", full, with(outdated(None), func(n *Node) { n.Loaded, n.Record = false, Record{} }), 0, None, "", "", false},
		{"no target yet: nothing", full, with(outdated(None), func(n *Node) { n.Target, n.Record = "", Record{} }), 0, None, "", "", false},
		{"outdated: required", full, with(outdated(None), func(n *Node) { n.Record = Record{} }), 0, Required, "", "the desired module changed", true},
		{"done, outdated again: required", full, outdated(Done), 0, Required, "", "the desired module changed", true},
		{"done and current: stays", full, with(current(Done), func(n *Node) { n.Record.Message = "upgraded" }), 0, Done, "", "upgraded", false},
		{"required waits for Admit", full, outdated(Required), 0, Required, "", "", false},
		{"required, skipped: says so", full, with(outdated(Required), func(n *Node) { n.Skip = true }), 0, Required, "", skipMessage, true},
		{"required, reverted: done", full, current(Required), 0, Done, "", "no outdated module on the node any more", true},
		{"required, unloaded meanwhile: done", full, with(outdated(Required), func(n *Node) { n.Loaded = false }), 0, Done, "",
			"no outdated module on the node any more", true},
		{"required, nothing desired yet: waits", full, with(outdated(Required), func(n *Node) { n.Target = "" }), 0, Required, "", "", false},
		{"required, new target: recorded", full, with(outdated(Required), func(n *Node) { n.Target = "t3" }), 0, Required, "", "", true},
		{"cordon off: next", Policy{}, outdated(Cordon), 0, WaitForPods, "", "", true},
		{"cordon: cordons", full, outdated(Cordon), 0, WaitForPods, ActionCordon, "cordoned", true},
		{"already cordoned: not ours", full, with(outdated(Cordon), func(n *Node) { n.Unschedulable = true }), 0, WaitForPods, "",
			"the node was cordoned already: it stays cordoned", true},
		{"wait: no policy", Policy{}, outdated(WaitForPods), 0, Evict, "", "", true},
		{"wait: pods done", full, outdated(WaitForPods), 0, Evict, "", "", true},
		{"wait: pods running", full, with(outdated(WaitForPods), func(n *Node) { n.Pods = []string{"b/j2", "a/j1"} }), 30 * time.Second,
			WaitForPods, "", "waiting for pods a/j1, b/j2 to finish", true},
		{"wait: timeout goes on", full, with(outdated(WaitForPods), func(n *Node) { n.Pods = []string{"a/j1"} }), time.Minute,
			Evict, "", "gave up waiting for pod a/j1 after 1m0s", true},
		{"wait: zero timeout is the default", Policy{WaitForPods: &PodWait{Selector: "x"}}, with(outdated(WaitForPods), func(n *Node) { n.Pods = []string{"a/j1"} }),
			59 * time.Minute, WaitForPods, "", "waiting for pod a/j1 to finish", true},
		{"evict: no policy", Policy{}, outdated(Evict), 0, StopDevicePlugin, "", "", true},
		{"evict: none left", full, outdated(Evict), 0, StopDevicePlugin, "", "", true},
		{"evict: evicts", full, with(outdated(Evict), func(n *Node) { n.Pods = []string{"a/w"} }), 0, Evict, ActionEvict, "evicting pod a/w", true},
		{"evict: timeout fails", full, with(outdated(Evict), func(n *Node) { n.Pods = []string{"a/w"} }), 2 * time.Minute, Failed, "",
			"pod a/w still on the node after 2m0s", true},
		{"device plugin still there", full, with(outdated(StopDevicePlugin), func(n *Node) { n.Pods = []string{"d/dp"} }), 0, StopDevicePlugin, "",
			"waiting for the device plugin pod d/dp to stop", true},
		{"device plugin gone: load", full, outdated(StopDevicePlugin), 0, Load, "", "", true},
		{"loading", full, outdated(Load), 0, Load, "", "loading the new module", true},
		{"loaded: validate", full, current(Load), 0, Validate, "", "the new module is loaded", true},
		{"load failed", full, with(outdated(Load), func(n *Node) { n.LoadFailed = "modprobe: bad" }), 0, Failed, "",
			"loading the new module failed: modprobe: bad", true},
		{"validate: no policy", Policy{}, current(Validate), 0, Uncordon, "", "", true},
		{"validate: ready", full, with(current(Validate), func(n *Node) { n.ValidationPods = 1 }), 0, Uncordon, "", "validated", true},
		{"validate: not ready", full, with(current(Validate), func(n *Node) { n.ValidationPods, n.Pods = 2, []string{"v/a"} }), time.Minute,
			Validate, "", "waiting for pod v/a to be Ready", true},
		{"validate: no pod yet", full, current(Validate), time.Minute, Validate, "", "waiting for a validation pod", true},
		{"validate: no pod ever fails (no hang)", full, current(Validate), 3 * time.Minute, Failed, "",
			"validation failed after 3m0s: no validation pod on the node", true},
		{"validate: not ready in time", full, with(current(Validate), func(n *Node) { n.ValidationPods, n.Pods = 1, []string{"v/a"} }), 3 * time.Minute,
			Failed, "", "validation failed after 3m0s: pod v/a not Ready", true},
		{"validate: module changed under it", full, outdated(Validate), 0, Load, "", "the loaded module is not the desired one any more", true},
		{"uncordon ours", full, with(current(Uncordon), func(n *Node) { n.Unschedulable, n.Record.Cordoned = true, true }), 0, Done, ActionUncordon, "upgraded", true},
		{"not ours: stays cordoned", full, with(current(Uncordon), func(n *Node) { n.Unschedulable = true }), 0, Done, "", "upgraded", true},
		{"ours, uncordoned by hand meanwhile", full, with(current(Uncordon), func(n *Node) { n.Record.Cordoned = true }), 0, Done, "", "upgraded", true},
		{"failed stays", full, with(outdated(Failed), func(n *Node) { n.Record.FailedIn, n.Record.Message = Evict, "x" }), time.Hour, Failed, "", "x", false},
		{"failed load retried OK: validate", full, with(current(Failed), func(n *Node) { n.Record.FailedIn = Load }), 0, Validate, "", "the new module is loaded", true},
		{"failed, new target: again", full, with(outdated(Failed), func(n *Node) { n.Record.Target, n.Record.FailedIn = "t1", Load }), 0, Required, "",
			"the desired module changed", true},
		{"unknown state: starts over", full, outdated("bogus"), 0, Required, "", "the desired module changed", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Step(c.p, c.n, c.n.Record.Since.Add(c.at))
			assert.Equal(t, c.state, d.State)
			assert.Equal(t, c.action, d.Action)
			assert.Equal(t, c.msg, d.Record.Message)
			assert.Equal(t, c.changed, d.Changed)
			if d.State != c.n.State {
				assert.Equal(t, c.n.Record.Since.Add(c.at), d.Record.Since, "a new step starts its clock")
			}
			if d.State == Failed && c.n.State != Failed {
				assert.Equal(t, c.n.State, d.Record.FailedIn)
			}
			if d.Action == ActionCordon {
				assert.True(t, d.Record.Cordoned, "a cordon is recorded with it")
			}
			if c.n.State == Uncordon {
				assert.False(t, d.Record.Cordoned)
			}
		})
	}
}

// TestStepWalk walks a node through every step with the full policy.
func TestStepWalk(t *testing.T) {
	p := Policy{Cordon: true, WaitForPods: &PodWait{Selector: "a=b"}, Evict: &Eviction{Selector: "c=d"}, Validation: &Validation{Selector: "e=f"}}
	n := outdated(None)
	n.Record = Record{}
	var seen []State
	now := t0
	for i := 0; i < 20 && n.State != Done; i++ {
		if n.State == Required {
			n.State = Cordon // Admit's move
		}
		d := Step(p, n, now)
		n.State, n.Record = d.State, d.Record
		switch d.Action {
		case ActionCordon:
			n.Unschedulable = true
		case ActionUncordon:
			n.Unschedulable = false
		}
		if n.State == Validate {
			n.ValidationPods = 1
		}
		if n.State == Load {
			n.Current = true // the loader did it
		}
		seen = append(seen, n.State)
	}
	assert.Equal(t, []State{Required, WaitForPods, Evict, StopDevicePlugin, Load, Validate, Uncordon, Done}, seen)
	assert.False(t, n.Unschedulable, "uncordoned: the upgrade cordoned it")
}

func TestStates(t *testing.T) {
	for _, s := range States {
		assert.True(t, s.Known(), s)
	}
	assert.True(t, None.Known())
	assert.False(t, State("x").Known())
	var progress []State
	for _, s := range States {
		if s.InProgress() {
			progress = append(progress, s)
		}
	}
	assert.Equal(t, []State{Cordon, WaitForPods, Evict, StopDevicePlugin, Load, Validate, Uncordon}, progress)
	assert.False(t, Failed.InProgress(), "a failed node holds no slot")
}

func TestRecordRoundTrip(t *testing.T) {
	r := Record{Target: "t", Since: t0, Cordoned: true, FailedIn: Load, Message: "m"}
	back, err := ParseRecord(r.String())
	require.NoError(t, err)
	assert.Equal(t, r, back)
	zero, err := ParseRecord("")
	require.NoError(t, err)
	assert.Equal(t, Record{}, zero)
	assert.Equal(t, "{}", Record{}.String())
	_, err = ParseRecord("{")
	assert.ErrorContains(t, err, "upgrade record")
}

func TestDevicePluginHeld(t *testing.T) {
	o := identity.Domain{}.Owner("drivers", "nic")
	var nodes []*corev1.Node
	for _, s := range append([]State{None}, States...) {
		nodes = append(nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n-" + string(s), Labels: map[string]string{o.UpgradeStateLabel(): string(s)}}})
	}
	assert.Equal(t, map[string]bool{"n-device-plugin-stop-required": true, "n-module-update-required": true, "n-validation-required": true,
		"n-upgrade-failed": true}, DevicePluginHeld(o, nodes))
}

func TestPolicyValidate(t *testing.T) {
	assert.NoError(t, Policy{}.Validate(), "the zero policy is valid")
	for _, c := range []struct {
		p   Policy
		err string
	}{
		{Policy{MaxParallel: -1}, "upgrade policy: MaxParallel -1: must not be negative"},
		{Policy{FailureThreshold: -2}, "upgrade policy: FailureThreshold -2: must not be negative"},
		{Policy{MaxUnavailable: pct("x%")}, `upgrade policy: MaxUnavailable "x%"`},
		{Policy{MaxUnavailable: pct("3")}, `upgrade policy: MaxUnavailable "3"`},
		{Policy{MaxUnavailable: pct("120%")}, `upgrade policy: MaxUnavailable "120%": must be between`},
		{Policy{MaxUnavailable: num(-1)}, `upgrade policy: MaxUnavailable "-1": must be between`},
		{Policy{WaitForPods: &PodWait{}}, "upgrade policy: WaitForPods.Selector: required"},
		{Policy{Evict: &Eviction{Selector: "a in (", Timeout: 1}}, `upgrade policy: Evict.Selector "a in ("`},
		{Policy{Validation: &Validation{Selector: "a=b", Timeout: -time.Second}}, "upgrade policy: Validation.Timeout -1s: must not be negative"},
	} {
		assert.ErrorContains(t, c.p.Validate(), c.err)
	}
}
