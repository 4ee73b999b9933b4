package upgrade_test

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kmmkit/kmmkit/upgrade"
)

// Admit picks the nodes that start their upgrade now: here two of four
// outdated nodes may move, but one node is cordoned already (by someone
// else), so it goes first and costs no unavailability.
func ExampleAdmit() {
	limit := intstr.FromInt32(2)
	p := upgrade.Policy{MaxParallel: 2, MaxUnavailable: &limit}
	node := func(name string, cordoned bool) upgrade.Node {
		return upgrade.Node{Name: name, State: upgrade.Required, Ready: true, Loaded: true, Target: "v2", Unschedulable: cordoned}
	}
	plan := upgrade.Admit(p, []upgrade.Node{node("a", false), node("b", false), node("c", true), node("d", false)})
	fmt.Println(plan.Admit, plan.Unavailable, plan.MaxUnavailable)
	// Output: [c a] 1 2
}
