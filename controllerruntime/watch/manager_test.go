package watch_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kmmkit/kmmkit/controllerruntime/cached"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/crtest"
	"github.com/kmmkit/kmmkit/controllerruntime/watch"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// counter is a reconciler that counts its requests per Module.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) Reconcile(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[req.Name]++
	return reconcile.Result{}, nil
}

func (c *counter) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// take returns the counts so far and starts again from zero.
func (c *counter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.n
	c.n = map[string]int{}
	return out
}

// TestManagerEnqueuesExactlyTheAffectedModules runs a real
// controller-runtime manager on the test kube-apiserver with the watches
// of this package, and counts the reconcile requests each Module gets
// after each node change: exactly the Modules a change affects are
// reconciled, kmmkit's own label and annotation writes reconcile none
// (unless a selector names the label), and worker and build Pods route
// back to their Module.
func TestManagerEnqueuesExactlyTheAffectedModules(t *testing.T) {
	env := crtest.New(t)
	ctx := context.Background()
	ns := env.Namespace(t, "watch")
	run := env.Run
	opts := env.Options(t, ns)
	opts.Cache.ByObject = cached.ByObject(kmmID)
	mgr, err := ctrl.NewManager(env.Config, opts)
	require.NoError(t, err)
	count := &counter{n: map[string]int{}}
	require.NoError(t, ctrl.NewControllerManagedBy(mgr).Named("count").
		For(&v1beta1.Module{}).
		Watches(&corev1.Node{}, watch.NodeHandler(watch.Modules(mgr.GetCache()), kmmID), builder.WithPredicates(watch.NodePredicate())).
		Watches(&corev1.Pod{}, watch.PodHandler(kmmID, false)).
		Watches(&appsv1.DaemonSet{}, watch.PodHandler(kmmID, false)).
		Complete(count))

	gpu := "example.com/" + run
	readyA := kmmID.Owner(ns, "a").ReadyLabel()
	sentinel := "sentinel." + run
	module := func(name string, sel map[string]string, tol ...corev1.Toleration) {
		require.NoError(t, env.Client.Create(ctx, &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1beta1.ModuleSpec{Selector: sel, Tolerations: tol}}))
	}
	module("a", map[string]string{"run": run, "pool": "a"})
	module("b", map[string]string{"run": run, "pool": "b"})
	module("all", map[string]string{"run": run}, corev1.Toleration{Key: gpu, Operator: corev1.TolerationOpExists})
	module("dep", map[string]string{"run": run, readyA: ""}) // loads where a is ready
	module("sentinel", map[string]string{sentinel: "on"})
	n1, n2 := run+"-n1", run+"-n2"
	env.ReadyNode(t, n1, map[string]string{"run": run, "pool": "a"}, "6.1.0-56-amd64", "boot-1")
	env.ReadyNode(t, n2, map[string]string{"run": run, "pool": "b"}, "6.1.0-56-amd64", "boot-1")
	crtest.Start(t, mgr)

	patch := func(node string, p string) {
		t.Helper()
		_, err := env.Clientset.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(p), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	// settle waits until the sentinel Module, which only the barrier's
	// label sees, has been reconciled after every change made before the
	// barrier: node events reach the handler in order, and one worker
	// takes requests in the order they were added. It returns the
	// requests of the other Modules since the last settle.
	flip := "on"
	settle := func() map[string]int {
		t.Helper()
		before := count.get("sentinel")
		patch(n1, `{"metadata":{"labels":{"`+sentinel+`":"`+flip+`"}}}`)
		flip = map[string]string{"on": "off", "off": "on"}[flip]
		crtest.Eventually(t, "the barrier was never reconciled", func(context.Context) (bool, error) {
			return count.get("sentinel") > before, nil
		})
		got := count.take()
		delete(got, "sentinel")
		return got
	}
	requested := func(got map[string]int) []string {
		return slices.Sorted(maps.Keys(got))
	}
	crtest.Eventually(t, "the Modules were never reconciled", func(context.Context) (bool, error) {
		return count.get("a") > 0 && count.get("b") > 0 && count.get("all") > 0 && count.get("dep") > 0, nil
	})
	settle()
	settle()

	_, err = env.Clientset.CoreV1().Nodes().Patch(ctx, n1, types.MergePatchType,
		[]byte(`{"status":{"nodeInfo":{"kernelVersion":"6.1.0-57-amd64"}}}`), metav1.PatchOptions{}, "status")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "all"}, requested(settle()), "a kernel change on n1")

	patch(n2, `{"metadata":{"labels":{"pool":"c"}}}`)
	require.Equal(t, []string{"b"}, requested(settle()), "n2 leaves b's pool")

	patch(n2, `{"metadata":{"labels":{"zone":"west"}}}`)
	require.Empty(t, requested(settle()), "a label no selector names")

	b := kmmID.Owner(ns, "b")
	patch(n1, `{"metadata":{"labels":{"`+b.ReadyLabel()+`":"","`+b.VersionReadyLabel()+`":"v1"},"annotations":{"`+b.ObservedAnnotation()+`":"{}"}}}`)
	require.Empty(t, requested(settle()), "kmmkit's own label and annotation writes for b")

	patch(n1, `{"metadata":{"labels":{"`+readyA+`":""}}}`)
	require.Equal(t, []string{"dep"}, requested(settle()), "a's ready label, which dep's selector names")

	patch(n1, `{"spec":{"taints":[{"key":"`+gpu+`","effect":"NoSchedule"}]}}`)
	require.Equal(t, []string{"a", "b", "dep"}, requested(settle()),
		"a taint that all tolerates, on a node that a and dep select and that records b's module")

	_, err = env.Clientset.CoreV1().Nodes().Patch(ctx, n2, types.MergePatchType,
		[]byte(`{"status":{"nodeInfo":{"bootID":"boot-2"}}}`), metav1.PatchOptions{}, "status")
	require.NoError(t, err)
	require.Equal(t, []string{"all"}, requested(settle()), "n2 rebooted")

	_, err = env.Clientset.CoreV1().Nodes().Patch(ctx, n2, types.MergePatchType,
		[]byte(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":"2030-01-01T00:00:00Z"}]}}`),
		metav1.PatchOptions{}, "status")
	require.NoError(t, err)
	require.Empty(t, requested(settle()), "a heartbeat")

	n3 := run + "-n3"
	env.ReadyNode(t, n3, map[string]string{"run": run, "pool": "b"}, "6.1.0-56-amd64", "boot-1")
	got := settle()
	require.Subset(t, requested(got), []string{"all", "b"}, "n3 joins")
	require.NotContains(t, got, "a")
	require.NotContains(t, got, "dep")

	// The barrier lives on n1, so delete n3 to see a deletion: all and b
	// select it.
	require.NoError(t, env.Clientset.CoreV1().Nodes().Delete(ctx, n3, metav1.DeleteOptions{}))
	require.Equal(t, []string{"all", "b"}, requested(settle()), "n3 deleted")

	// Pods: a NICDriver's worker named like Module b routes nowhere; a
	// KMM worker and a build Pod of a route to a.
	pod := func(name string, labels map[string]string, owner string) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: n1, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		if owner != "" {
			var m v1beta1.Module
			require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: owner}, &m))
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1beta1.SchemeGroupVersion.String(), Kind: v1beta1.Kind, Name: m.Name, UID: m.UID}}
		}
		_, err := env.Clientset.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pod("foreign", nicID.Owner(ns, "b").WorkerLabels("Load"), "")
	pod("worker-a", kmmID.Owner(ns, "a").WorkerLabels("Load"), "a")
	crtest.Eventually(t, "the worker Pod never reached Module a", func(context.Context) (bool, error) {
		return count.get("a") > 0, nil
	})
	require.Zero(t, count.get("b"), "another identity's Pod reached Module b")
	got = count.take()
	pod("build-a", kmmID.Owner(ns, "a").BuildLabels("BuildImage", "6-1-0-57-amd64"), "a")
	crtest.Eventually(t, "the build Pod never reached Module a", func(context.Context) (bool, error) {
		return count.get("a") > 0, nil
	})
	require.Equal(t, []string{"a"}, requested(got))
	require.Equal(t, []string{"a"}, requested(settle()))

	// A device plugin DaemonSet of a, and its status (the counts, and
	// when an old version's may go), route to a; another identity's
	// routes nowhere.
	lbl := map[string]string{kmmID.Owner(ns, "a").NameLabel(): "a", kmmID.Owner(ns, "a").RoleLabel(): "device-plugin"}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "a-device-plugin-", Labels: lbl},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: lbl}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: lbl}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	ds, err = env.Clientset.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{})
	require.NoError(t, err)
	foreign := ds.DeepCopy()
	foreign.ResourceVersion, foreign.Name, foreign.GenerateName = "", "", "b-device-plugin-"
	nicB := nicID.Owner(ns, "b")
	foreign.Labels = map[string]string{nicB.NameLabel(): "b", nicB.RoleLabel(): "device-plugin"}
	foreign.Spec.Selector.MatchLabels, foreign.Spec.Template.Labels = foreign.Labels, foreign.Labels
	_, err = env.Clientset.AppsV1().DaemonSets(ns).Create(ctx, foreign, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, requested(settle()), "a's device plugin DaemonSet created")
	ds.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, NumberAvailable: 1}
	_, err = env.Clientset.AppsV1().DaemonSets(ns).UpdateStatus(ctx, ds, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, requested(settle()), "its status changed")
}
