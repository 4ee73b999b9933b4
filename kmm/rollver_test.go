package kmm_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/upgrade"
)

// TestRollingUpgradeVersioned: a rolling-upgrade policy over KMM's
// ordered upgrade. Five nodes of a Module at version v1 (the policy sets
// their version-module label, M, itself: nothing is loaded there yet);
// the spec moves to v2 (version and image) with MaxParallel 1 and
// MaxUnavailable 1. The policy cordons each node, evicts its device
// users, waits for its device plugin to stop, and only then sets M=v2;
// KMM's own label steps unload v1 and load v2. At no instant recorded by
// the watch is more than one node in an upgrade, without the module, or
// between versions. The node with the skip label keeps v1 until the test,
// as its administrator, sets its M.
func TestRollingUpgradeVersioned(t *testing.T) {
	ctx := context.Background()
	p := upgrade.Policy{MaxParallel: 1, MaxUnavailable: ptr.To(intstr.FromInt32(1)), Cordon: true,
		Evict: &upgrade.Eviction{Selector: "app=gpu-user"}}
	e := newRollEnv(t, 5, p)
	e.obj.Spec.ModuleLoader.Container.Version = "v1"
	e.obj.Spec.DevicePlugin = &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "registry.example.com/nic-dp:1"}}
	mKey, sKey, vKey := e.owner.VersionModuleLabel(), e.owner.VersionSchedulePodLabel(), e.owner.VersionReadyLabel()
	settled := func(v string, names ...string) bool {
		for _, name := range names {
			l := e.node(ctx, name).Labels
			if l[mKey] != v || l[sKey] != v || l[vKey] != v {
				return false
			}
		}
		return true
	}
	for i := 0; i < 30 && !settled("v1", e.nodes...); i++ {
		e.pass(ctx)
	}
	require.True(t, settled("v1", e.nodes...), "v1 loaded everywhere, M, S and .version.ready at v1")
	ev := e.events()
	for _, name := range e.nodes {
		assert.Contains(t, ev, fmt.Sprintf("Normal VersionLabelAdded node %s: set %s=v1 (the rolling upgrade loads a node with nothing loaded at once)",
			name, mKey), "the policy set M on %s", name)
	}
	managed, skipped := e.nodes[:4], e.nodes[4]
	_, err := e.cs.CoreV1().Nodes().Patch(ctx, skipped, "application/merge-patch+json",
		[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, e.owner.UpgradeSkipLabel())), metav1.PatchOptions{})
	require.NoError(t, err)
	for _, n := range e.nodes {
		e.workload(ctx, n, map[string]string{"app": "gpu-user"})
	}
	// A device plugin Pod on n2: the test's kubelet removes it while
	// upgrade.DevicePluginHeld holds the node.
	e.pod(ctx, "nic-device-plugin", managed[1], map[string]string{e.owner.NameLabel(): "nic", e.owner.RoleLabel(): identity.RoleDevicePlugin}, true)
	e.watchNodes(ctx)

	e.obj.Spec.ModuleLoader.Container.Version = "v2"
	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	e.obj.Generation = 2
	dpBack := func() bool { // the device plugin target label is back (the pass after upgrade-done)
		for _, name := range managed {
			if _, ok := e.node(ctx, name).Labels[e.owner.DevicePluginTargetLabel()]; !ok {
				return false
			}
		}
		return true
	}
	for i := 0; i < 300 && !(e.doneCount(ctx) == len(managed) && settled("v2", managed...) && dpBack()); i++ {
		res := e.pass(ctx)
		require.NotZero(t, res.RequeueAfter, "a rollout in progress asks for another pass")
	}
	require.Equal(t, len(managed), e.doneCount(ctx))
	c := meta.FindStatusCondition(e.obj.Status.Conditions, kmm.ConditionUpgraded)
	require.NotNil(t, c)
	assert.Equal(t, string(reason.UpgradeInProgress), c.Reason, c.Message)
	assert.Contains(t, c.Message, "1 waiting (1 skipped)")

	e.assertInvariants(1)
	e.assertVersionInvariant(skipped)
	want := []upgrade.State{upgrade.Required, upgrade.Cordon, upgrade.WaitForPods, upgrade.Evict, upgrade.StopDevicePlugin,
		upgrade.Load, upgrade.Validate, upgrade.Uncordon, upgrade.Done}
	states := e.states()
	for _, name := range managed {
		seq := states[name]
		if len(seq) > 0 && seq[0] == upgrade.Cordon {
			seq = append([]upgrade.State{upgrade.Required}, seq...)
		}
		assert.Equal(t, want, seq, "node %s went through every step once, in order", name)
		n := e.node(ctx, name)
		assert.Equal(t, "v2", n.Labels[mKey], "%s: M", name)
		assert.Equal(t, "v2", n.Labels[sKey], "%s: S", name)
		assert.Equal(t, "v2", n.Labels[vKey], "%s: .version.ready", name)
		assert.False(t, n.Spec.Unschedulable, "%s uncordoned", name)
		obs, ok, err := loader.ObservedBy(n, e.owner)
		require.NoError(t, err)
		require.True(t, ok, name)
		assert.Equal(t, "v2", obs.Version, name)
		assert.Equal(t, rollImageV2, obs.Config.ContainerImage, name)
		assert.Equal(t, []string{"Load " + rollImageV1, "Unload " + rollImageV1, "Load " + rollImageV2}, e.loads[name],
			"%s: v1 loaded, unloaded, v2 loaded", name)
		// The two halves do not fight: M moves once, S leaves once and
		// comes back at v2, the device plugin target label leaves once
		// and comes back.
		assert.Equal(t, []string{"v1", "v2"}, e.labelSeq(name, func(w nodeWrite) string { return w.m }), "%s: M", name)
		assert.Equal(t, []string{"v1", "", "v2"}, e.labelSeq(name, func(w nodeWrite) string { return w.s }), "%s: S", name)
		assert.Equal(t, []string{"v1", "", "v2"}, e.labelSeq(name, func(w nodeWrite) string { return w.versionReady }), "%s: .version.ready", name)
		assert.Equal(t, []string{"true", "false", "true"}, e.labelSeq(name, func(w nodeWrite) string { return fmt.Sprint(w.dpTarget) }),
			"%s: device plugin target", name)
	}
	assert.Equal(t, []string{managed[1]}, e.dpStopped, "the device plugin Pod left n2 when its upgrade held it")

	// The skipped node keeps v1, M included.
	n := e.node(ctx, skipped)
	assert.Equal(t, string(upgrade.Required), n.Labels[e.owner.UpgradeStateLabel()])
	assert.True(t, settled("v1", skipped), "the skipped node keeps M, S and .version.ready at v1")
	assert.Equal(t, []string{"Load " + rollImageV1}, e.loads[skipped])
	_, err = e.cs.CoreV1().Pods(e.ns).Get(ctx, "gpu-user-"+skipped[strings.LastIndex(skipped, "-")+1:], metav1.GetOptions{})
	assert.NoError(t, err, "the skipped node's device user stays")
	for _, ev := range e.events() {
		assert.NotContains(t, ev, "node "+skipped+": set "+mKey, "the policy leaves the skipped node's M alone")
	}

	// Its administrator moves it: KMM's own steps, and the rollout is done.
	_, err = e.cs.CoreV1().Nodes().Patch(ctx, skipped, "application/merge-patch+json",
		[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"v2"}}}`, mKey)), metav1.PatchOptions{})
	require.NoError(t, err)
	for i := 0; i < 40; i++ {
		e.pass(ctx)
		c = meta.FindStatusCondition(e.obj.Status.Conditions, kmm.ConditionUpgraded)
		if settled("v2", skipped) && c.Status == metav1.ConditionTrue {
			break
		}
	}
	assert.True(t, settled("v2", skipped), "the administrator's M moved the skipped node")
	assert.Equal(t, []string{"Load " + rollImageV1, "Unload " + rollImageV1, "Load " + rollImageV2}, e.loads[skipped])
	assert.Equal(t, metav1.ConditionTrue, c.Status, c.Message)
	assert.Equal(t, "none of the 5 targeted node(s) has an outdated module or an upgrade under way", c.Message)
	assert.NotContains(t, e.states()[skipped], upgrade.Cordon, "the policy did not move the skipped node")
	e.assertInvariants(1)
}

// labelSeq is a node's sequence of values of f over the recorded writes,
// repeats dropped.
func (e *rollEnv) labelSeq(node string, f func(nodeWrite) string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, w := range e.writes {
		if w.node != node {
			continue
		}
		if v := f(w); len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}

// assertVersionInvariant checks every recorded instant: at most one node
// (the skipped ones aside) is in an upgrade or has its version labels
// apart (M, S and .version.ready not all the same).
func (e *rollEnv) assertVersionInvariant(skipped ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := map[string]nodeWrite{}
	for i, w := range e.writes {
		now[w.node] = w
		if len(now) < len(e.nodes) {
			continue
		}
		var moving []string
		for name, s := range now {
			if slices.Contains(skipped, name) {
				continue
			}
			if s.state.InProgress() || s.m != s.s || s.s != s.versionReady {
				moving = append(moving, name)
			}
		}
		if !assert.LessOrEqual(e.t, len(moving), 1, "write %d (%s at rv %s): nodes between versions: %v", i, w.node, w.rv, moving) {
			return
		}
	}
}

// TestRollingUpgradeVersionedUserLabel: on a node the policy manages, an
// M the administrator sets before the node's turn does not jump the
// queue: KMM's steps take S and W away, but v1 stays loaded there until
// the node is admitted and reaches the load step.
func TestRollingUpgradeVersionedUserLabel(t *testing.T) {
	ctx := context.Background()
	e := newRollEnv(t, 2, upgrade.Policy{MaxParallel: 1})
	e.obj.Spec.ModuleLoader.Container.Version = "v1"
	mKey, vKey := e.owner.VersionModuleLabel(), e.owner.VersionReadyLabel()
	first, second := e.nodes[0], e.nodes[1]
	at := func(name string) string { return e.node(ctx, name).Labels[vKey] }
	for i := 0; i < 30 && (at(first) != "v1" || at(second) != "v1"); i++ {
		e.pass(ctx)
	}
	require.Equal(t, "v1", at(first))
	require.Equal(t, "v1", at(second))
	e.watchNodes(ctx)
	e.obj.Spec.ModuleLoader.Container.Version = "v2"
	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	stateOf := func(name string) upgrade.State {
		return upgrade.State(e.node(ctx, name).Labels[e.owner.UpgradeStateLabel()])
	}
	for i := 0; i < 5 && !stateOf(first).InProgress(); i++ {
		e.pass(ctx)
	}
	require.True(t, stateOf(first).InProgress(), "the first node is admitted")
	require.Equal(t, upgrade.Required, stateOf(second))
	_, err := e.cs.CoreV1().Nodes().Patch(ctx, second, "application/merge-patch+json",
		[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"v2"}}}`, mKey)), metav1.PatchOptions{})
	require.NoError(t, err)
	waited := 0
	for i := 0; i < 60 && stateOf(first) != upgrade.Done; i++ {
		e.pass(ctx)
		n := e.node(ctx, second)
		if upgrade.State(n.Labels[e.owner.UpgradeStateLabel()]) == upgrade.Required {
			waited++
			assert.Equal(t, "v1", n.Labels[vKey], "the second node keeps v1 while it waits")
		}
	}
	require.Equal(t, upgrade.Done, stateOf(first))
	assert.Greater(t, waited, 3, "the second node waited for its turn")
	// The pass that finished the first node admitted the second.
	n := e.node(ctx, second)
	assert.Contains(t, []upgrade.State{upgrade.Required, upgrade.Cordon}, stateOf(second))
	assert.Equal(t, "v1", n.Labels[vKey])
	assert.Empty(t, n.Labels[e.owner.VersionWorkerPodLabel()], "KMM's steps took W away")
	assert.Equal(t, []string{"Load " + rollImageV1}, e.loads[second], "nothing unloaded before its turn")
	for i := 0; i < 60 && e.doneCount(ctx) < 2; i++ {
		e.pass(ctx)
	}
	require.Equal(t, 2, e.doneCount(ctx))
	for i := 0; i < 10 && at(second) != "v2"; i++ {
		e.pass(ctx)
	}
	assert.Equal(t, "v2", at(second))
	assert.Equal(t, []string{"Load " + rollImageV1, "Unload " + rollImageV1, "Load " + rollImageV2}, e.loads[second])
	e.assertInvariants(1)
}

// TestRollingUpgradeVersionedImageOnly: a new image at the same version
// is paced as any image change; M, W and S stay as they are.
func TestRollingUpgradeVersionedImageOnly(t *testing.T) {
	ctx := context.Background()
	e := newRollEnv(t, 3, upgrade.Policy{MaxParallel: 1, Cordon: true})
	e.obj.Spec.ModuleLoader.Container.Version = "v1"
	mKey, sKey, vKey := e.owner.VersionModuleLabel(), e.owner.VersionSchedulePodLabel(), e.owner.VersionReadyLabel()
	loadedV1 := func() bool {
		for _, name := range e.nodes {
			if l := e.node(ctx, name).Labels; l[sKey] != "v1" || l[vKey] != "v1" {
				return false
			}
		}
		return true
	}
	for i := 0; i < 30 && !loadedV1(); i++ {
		e.pass(ctx)
	}
	require.True(t, loadedV1())
	e.events()
	e.watchNodes(ctx)
	e.obj.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = rollImageV2
	for i := 0; i < 100 && e.doneCount(ctx) < 3; i++ {
		e.pass(ctx)
	}
	require.Equal(t, 3, e.doneCount(ctx))
	e.assertInvariants(1)
	for _, name := range e.nodes {
		assert.Equal(t, []string{"Load " + rollImageV1, "Unload " + rollImageV1, "Load " + rollImageV2}, e.loads[name], name)
		assert.Equal(t, []string{"v1"}, e.labelSeq(name, func(w nodeWrite) string { return w.m }), "%s: M untouched", name)
		assert.Equal(t, []string{"v1"}, e.labelSeq(name, func(w nodeWrite) string { return w.s }), "%s: S untouched", name)
		obs, ok, err := loader.ObservedBy(e.node(ctx, name), e.owner)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, rollImageV2, obs.Config.ContainerImage, name)
		assert.Equal(t, "v1", obs.Version, name)
		assert.Equal(t, "v1", e.node(ctx, name).Labels[mKey], name)
	}
	for _, ev := range e.events() {
		assert.NotContains(t, ev, "VersionLabel", "no version label moves")
	}
}
