package fleetbench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

// TestFleetCounts is `make bench-fleet` at 500 nodes, as a regression
// check on counts only (never times): on the real kube-apiserver and the
// real registry with htpasswd, the first rollout makes at most 3 API
// writes per (node, module) and no LIST per node; a steady pass makes no
// write, no LIST and no registry request; a kernel change on 100 nodes
// loads again with at most 4 writes per (node, module).
func TestFleetCounts(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	regs := testenv.Registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := Config{Run: fmt.Sprintf("fleet%d", rand.Uint32()%100000), Nodes: 500, Kernels: 5, Modules: 2,
		Registry: regs.TLS, CAFile: regs.CAFile, User: regs.User, Password: regs.Password}
	driver := rest.CopyConfig(cfg)
	driver.QPS = -1 // no client-side limit for the driver
	start := time.Now()
	f, err := Setup(ctx, driver, c)
	if f != nil {
		t.Cleanup(func() {
			start := time.Now()
			if err := f.Cleanup(context.Background()); err != nil {
				t.Logf("cleanup: %v", err)
			}
			t.Logf("cleanup: %s", time.Since(start).Round(time.Millisecond))
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("setup: %s", time.Since(start).Round(time.Millisecond))
	k, err := f.StartKubelet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := NewController(ctx, cfg, ControllerConfig{Namespace: f.Namespace, QPS: 300, Burst: 600, Workers: 2, CAFile: regs.CAFile, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pairs := int64(c.Nodes * c.Modules)

	m := ctl.Mark()
	ctl.Run(ctx)
	if err := ctl.WaitLoaded(ctx, c.Modules, c.Nodes, "", 0); err != nil {
		t.Fatal(err)
	}
	rollout := ctl.Since(m)
	t.Logf("rollout: %s, %d passes, %d registry requests, API %s", rollout.Wall.Round(time.Millisecond), rollout.Passes, rollout.Registry, rollout.API)
	// Per (node, module): the worker Pod's create and delete and one node
	// patch (the observed annotation and the ready label together).
	if w := rollout.API.WritesOn("pods") + rollout.API.WritesOn("nodes"); w > 3*pairs {
		t.Errorf("rollout: %d API writes on Pods and nodes for %d (node, module) pairs, want at most 3 each", w, pairs)
	}
	// Per Module: its finalizer, and its status as the counts move.
	if w := rollout.API.WritesOn("modules"); w > int64(c.Modules)*int64(rollout.Passes) {
		t.Errorf("rollout: %d Module writes in %d passes", w, rollout.Passes)
	}
	if w, others := rollout.API.Writes(), rollout.API.WritesOn("pods")+rollout.API.WritesOn("nodes")+rollout.API.WritesOn("modules"); w != others {
		t.Errorf("rollout: %d writes on other resources: %s", w-others, rollout.API)
	}
	if l := rollout.API.Verb("list"); l > int64(c.Modules) {
		t.Errorf("rollout: %d LISTs, want none per node (the informers listed before)", l)
	}
	if rollout.Registry == 0 {
		t.Error("rollout: no registry request: the images were never checked")
	}
	if n := k.Finished(); n < pairs {
		t.Errorf("the kubelet finished %d worker Pods, want at least %d", n, pairs)
	}

	start = time.Now()
	steady, err := ctl.Steady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("steady pass, with the wait for the queue: %s; %d passes, %d registry requests, API %s", time.Since(start).Round(time.Millisecond), steady.Passes, steady.Registry, steady.API)
	if w := steady.API.Writes(); w != 0 {
		t.Errorf("steady pass: %d API writes (%s), want 0", w, steady.API)
	}
	if l := steady.API.Verb("list"); l != 0 {
		t.Errorf("steady pass: %d LISTs, want 0", l)
	}
	if steady.Registry != 0 {
		t.Errorf("steady pass: %d registry requests, want 0 within the TTL", steady.Registry)
	}
	if steady.Passes != int64(c.Modules) {
		t.Errorf("steady pass: %d Reconciles, want %d", steady.Passes, c.Modules)
	}

	const changed = 100
	m = ctl.Mark()
	if err := f.ChangeKernels(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if err := ctl.WaitLoaded(ctx, c.Modules, c.Nodes, Kernel(c.Kernels), changed); err != nil {
		t.Fatal(err)
	}
	change := ctl.Since(m)
	t.Logf("kernel change on %d nodes: %s, %d passes, %d registry requests, API %s", changed, change.Wall.Round(time.Millisecond), change.Passes, change.Registry, change.API)
	// A load (Pod create, node patch, Pod delete) plus the ready labels
	// going while the new kernel has no module yet.
	if w := change.API.WritesOn("pods") + change.API.WritesOn("nodes"); w > 4*changed*int64(c.Modules) {
		t.Errorf("kernel change: %d API writes on Pods and nodes for %d (node, module) pairs, want at most 4 each", w, changed*c.Modules)
	}
	if l := change.API.Verb("list"); l > int64(c.Modules) {
		t.Errorf("kernel change: %d LISTs, want none per node", l)
	}
	if err := k.Err(); err != nil {
		t.Error(err)
	}
}
