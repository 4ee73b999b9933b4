package loader_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/loader"
)

// steadyFleet is nodes × modules where every module is loaded as desired:
// the nodes carry the loader's record and labels, and no worker Pod runs.
type steadyFleet struct {
	nodes []*corev1.Node
	reqs  []loader.SyncRequest
}

func newSteadyFleet(nodes, modules, kernels int) steadyFleet {
	var f steadyFleet
	desired := make([]map[string]*loader.PodRequest, modules)
	for m := range desired {
		desired[m] = map[string]*loader.PodRequest{}
	}
	for i := 0; i < nodes; i++ {
		kver := fmt.Sprintf("6.1.0-%d-amd64", i%kernels)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%05d", i), UID: types.UID(fmt.Sprint("uid-", i)),
			Labels: map[string]string{}, Annotations: map[string]string{}}}
		n.Status.NodeInfo.KernelVersion = kver
		n.Status.NodeInfo.BootID = fmt.Sprintf("boot-%d", i)
		for m := 0; m < modules; m++ {
			module := fmt.Sprintf("drv%d", m)
			r := desiredConfig(kver, fmt.Sprintf("registry.example.com/%s:%s", module, kver))
			desired[m][n.Name] = r
			raw, err := json.Marshal(loader.Observed{Config: r.Config, BootID: n.Status.NodeInfo.BootID, Version: r.ModuleVersion,
				ServiceAccountName: r.ServiceAccountName, Tolerations: r.Tolerations})
			if err != nil {
				panic(err)
			}
			n.Annotations[loader.ObservedAnnotation("drivers", module)] = string(raw)
			n.Labels[loader.ReadyLabel("drivers", module)] = ""
			n.Labels[loader.VersionReadyLabel("drivers", module)] = r.ModuleVersion
		}
		f.nodes = append(f.nodes, n)
	}
	for m := 0; m < modules; m++ {
		f.reqs = append(f.reqs, loader.SyncRequest{Namespace: "drivers", Module: fmt.Sprintf("drv%d", m), Nodes: f.nodes, Desired: desired[m]})
	}
	return f
}

// noPods is a PodLister of a namespace without worker Pods.
func noPods(context.Context, string, labels.Selector) ([]*corev1.Pod, error) { return nil, nil }

// steadyPass syncs every module once and fails unless each node reports
// every module Loaded and the loader made no API call.
func steadyPass(tb testing.TB, l *loader.PodLoader, cs *k8sfake.Clientset, f steadyFleet) {
	for _, req := range f.reqs {
		states, err := l.Sync(context.Background(), req)
		if err != nil {
			tb.Fatal(err)
		}
		if len(states) != len(f.nodes) {
			tb.Fatalf("%s: %d states for %d nodes", req.Module, len(states), len(f.nodes))
		}
		for _, s := range states {
			if s.Phase != loader.PhaseLoaded || s.Observed == nil {
				tb.Fatalf("%s on %s: %s (%s)", req.Module, s.Node, s.Phase, s.Condition.Message)
			}
		}
	}
	if a := cs.Actions(); len(a) != 0 {
		tb.Fatalf("a steady pass made %d API calls, the first %s %s", len(a), a[0].GetVerb(), a[0].GetResource().Resource)
	}
}

// TestSteadySyncMakesNoCalls: over a fleet where everything is loaded, two
// passes report every node Loaded and make no API call (the second one
// from what the first remembered).
func TestSteadySyncMakesNoCalls(t *testing.T) {
	f := newSteadyFleet(50, 3, 5)
	cs := k8sfake.NewClientset()
	l, err := loader.NewPodLoader(cs, "quay.io/kmmkit/kmm:v0.1", loader.WithPodLister(noPods))
	if err != nil {
		t.Fatal(err)
	}
	steadyPass(t, l, cs, f)
	steadyPass(t, l, cs, f)
}

// BenchmarkSteadySync is one steady pass of the PodLoader alone: 10
// Modules over 5,000 nodes on 50 kernels, all loaded, nothing to do.
func BenchmarkSteadySync(b *testing.B) {
	f := newSteadyFleet(5000, 10, 50)
	cs := k8sfake.NewClientset()
	l, err := loader.NewPodLoader(cs, "quay.io/kmmkit/kmm:v0.1", loader.WithPodLister(noPods))
	if err != nil {
		b.Fatal(err)
	}
	steadyPass(b, l, cs, f) // the first pass fills what the loader keeps
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		steadyPass(b, l, cs, f)
	}
}
