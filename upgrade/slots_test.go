package upgrade

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// up is an available node in state s.
func up(name string, s State) Node {
	return Node{Name: name, State: s, Ready: true, Loaded: true, Target: "t2"}
}

func pct(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
func num(i int) *intstr.IntOrString    { v := intstr.FromInt32(int32(i)); return &v }

func TestMaxUnavailableOf(t *testing.T) {
	for _, c := range []struct {
		u        *intstr.IntOrString
		targeted int
		want     int
	}{
		{nil, 10, 1},       // zero value: one
		{num(0), 10, 1},    // zero means one: a rollout always moves
		{num(3), 10, 3},    // a number
		{num(30), 10, 30},  // more than the nodes: harmless
		{pct("33%"), 6, 1}, // rounded down: 1.98
		{pct("34%"), 6, 2}, // 2.04
		{pct("50%"), 7, 3}, // 3.5
		{pct("10%"), 3, 1}, // rounds to 0: one
		{pct("100%"), 4, 4},
		{pct("0%"), 4, 1},
	} {
		assert.Equal(t, c.want, Policy{MaxUnavailable: c.u}.MaxUnavailableOf(c.targeted), "%v of %d", c.u, c.targeted)
	}
}

func names(n ...string) []string { return n }

func TestAdmit(t *testing.T) {
	cordoned := up("c", Required)
	cordoned.Unschedulable = true
	notReady := up("nr", Required)
	notReady.Ready = false
	skipped := up("s", Required)
	skipped.Skip = true
	unloaded := up("u", Done)
	unloaded.Loaded = false
	failedDown := up("f", Failed)
	failedDown.Loaded = false
	failedUp := up("g", Failed) // failed before the unload, not cordoned: still serving

	for _, c := range []struct {
		name  string
		p     Policy
		nodes []Node
		admit []string
		pause bool
	}{
		{"zero policy: one at a time", Policy{}, []Node{up("a", Required), up("b", Required), up("c", Required)}, names("a"), false},
		{"zero policy, one in progress: none", Policy{}, []Node{up("a", Load), up("b", Required)}, nil, false},
		{"parallel 2, unavailable 2", Policy{MaxParallel: 2, MaxUnavailable: num(2)},
			[]Node{up("a", Required), up("b", Required), up("c", Required)}, names("a", "b"), false},
		{"parallel 3 but unavailable 1", Policy{MaxParallel: 3, MaxUnavailable: num(1)},
			[]Node{up("a", Required), up("b", Required), up("c", Required)}, names("a"), false},
		{"unavailable 33% of 6 is 1", Policy{MaxParallel: 4, MaxUnavailable: pct("33%")},
			[]Node{up("a", Required), up("b", Required), up("c", Required), up("d", Required), up("e", Required), up("f", Required)}, names("a"), false},
		{"unavailable 34% of 6 is 2", Policy{MaxParallel: 4, MaxUnavailable: pct("34%")},
			[]Node{up("a", Required), up("b", Required), up("c", Required), up("d", Required), up("e", Required), up("f", Required)}, names("a", "b"), false},
		{"in progress counts against both", Policy{MaxParallel: 2, MaxUnavailable: num(2)},
			[]Node{up("a", Evict), up("b", Required), up("c", Required)}, names("b"), false},
		{"every in-progress state holds a slot", Policy{MaxParallel: 7, MaxUnavailable: num(8)},
			[]Node{up("a", Cordon), up("b", WaitForPods), up("c", Evict), up("d", StopDevicePlugin), up("e", Load), up("f", Validate),
				up("g", Uncordon), up("h", Required), up("i", Required)}, nil, false},
		{"done and required hold none", Policy{MaxParallel: 1, MaxUnavailable: num(1)},
			[]Node{up("a", Done), up("b", None), up("c", Required)}, names("c"), false},
		{"skip label: never admitted", Policy{MaxParallel: 2, MaxUnavailable: num(2)},
			[]Node{skipped, up("t", Required)}, names("t"), false},
		{"only skipped: nothing", Policy{}, []Node{skipped}, nil, false},
		{"an already cordoned node goes first and costs no unavailability", Policy{MaxParallel: 2, MaxUnavailable: num(2)},
			[]Node{up("a", Required), up("b", Required), cordoned}, names("c", "a"), false},
		{"cordoned node uses up unavailability for the others", Policy{MaxParallel: 3, MaxUnavailable: num(1)},
			[]Node{up("a", Required), up("b", Required), cordoned}, names("c"), false},
		{"a not-ready node is unavailable already", Policy{MaxParallel: 2, MaxUnavailable: num(1)},
			[]Node{up("a", Required), notReady}, names("nr"), false},
		{"unavailable outside the rollout blocks available nodes", Policy{MaxParallel: 2, MaxUnavailable: num(1)},
			[]Node{up("a", Required), unloaded}, nil, false},
		{"parallel bounds even unavailable candidates", Policy{MaxParallel: 1, MaxUnavailable: num(5)},
			[]Node{cordoned, notReady}, names("c"), false},
		{"a failed node holds no slot but is unavailable", Policy{MaxParallel: 1, MaxUnavailable: num(2), FailureThreshold: 2},
			[]Node{failedDown, up("a", Required), up("b", Required)}, names("a"), false},
		{"a failed node still serving costs nothing", Policy{MaxParallel: 1, MaxUnavailable: num(1), FailureThreshold: 2},
			[]Node{failedUp, up("a", Required)}, names("a"), false},
		{"zero threshold: the first failure pauses", Policy{MaxParallel: 5, MaxUnavailable: num(5)},
			[]Node{failedUp, up("a", Required)}, nil, true},
		{"threshold reached pauses", Policy{MaxParallel: 5, MaxUnavailable: num(5), FailureThreshold: 2},
			[]Node{failedUp, failedDown, up("a", Required)}, nil, true},
		{"negative room admits nothing", Policy{MaxParallel: 1, MaxUnavailable: num(1)},
			[]Node{up("a", Load), up("b", Load), up("c", Required)}, nil, false},
		{"no nodes", Policy{}, nil, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pl := Admit(c.p, c.nodes)
			assert.Equal(t, c.admit, pl.Admit)
			assert.Equal(t, c.pause, pl.Paused)
		})
	}
}

// TestAdmitNeverExceedsLimits: for every mix of states of six nodes
// (sampled exhaustively over a smaller alphabet), admitting never takes
// in-progress nodes over MaxParallel, nor unavailable nodes over
// MaxUnavailable unless they were over already.
func TestAdmitNeverExceedsLimits(t *testing.T) {
	alphabet := []func(string) Node{
		func(n string) Node { return up(n, Required) },
		func(n string) Node { return up(n, Load) },
		func(n string) Node { return up(n, Done) },
		func(n string) Node { x := up(n, Required); x.Unschedulable = true; return x },
		func(n string) Node { x := up(n, Failed); x.Loaded = false; return x },
		func(n string) Node { x := up(n, Required); x.Skip = true; return x },
	}
	const size = 5
	total := 1
	for i := 0; i < size; i++ {
		total *= len(alphabet)
	}
	for _, p := range []Policy{{}, {MaxParallel: 2, MaxUnavailable: num(2), FailureThreshold: 3}, {MaxParallel: 3, MaxUnavailable: pct("40%"), FailureThreshold: 9}} {
		for code := 0; code < total; code++ {
			nodes := make([]Node, size)
			for i, c := 0, code; i < size; i, c = i+1, c/len(alphabet) {
				nodes[i] = alphabet[c%len(alphabet)](fmt.Sprint("n", i))
			}
			pl := Admit(p, nodes)
			admitted := map[string]bool{}
			for _, a := range pl.Admit {
				admitted[a] = true
			}
			inProgress, unavailable := 0, 0
			for i := range nodes {
				if admitted[nodes[i].Name] {
					assert.Equal(t, Required, nodes[i].State)
					assert.False(t, nodes[i].Skip)
					nodes[i].State = Cordon
				}
				if nodes[i].State.InProgress() {
					inProgress++
				}
				if !nodes[i].Available() {
					unavailable++
				}
			}
			if len(pl.Admit) > 0 {
				assert.LessOrEqual(t, inProgress, pl.MaxParallel, "code %d", code)
				assert.LessOrEqual(t, unavailable, max(pl.MaxUnavailable, pl.Unavailable), "code %d", code)
				assert.False(t, pl.Paused)
			}
		}
	}
}
