package kmm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
)

// nodePatches records the bodies of the node PATCH requests a client
// sends, by node.
type nodePatches struct {
	mu     sync.Mutex
	bodies map[string][]string
}

func (p *nodePatches) RoundTrip(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPatch && strings.HasPrefix(req.URL.Path, "/api/v1/nodes/") && req.Body != nil {
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return nil, err
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			p.mu.Lock()
			name := strings.TrimPrefix(req.URL.Path, "/api/v1/nodes/")
			p.bodies[name] = append(p.bodies[name], string(body))
			p.mu.Unlock()
		}
		return next.RoundTrip(req)
	})
}

// take returns and forgets the recorded patches.
func (p *nodePatches) take() map[string][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.bodies
	p.bodies = map[string][]string{}
	return out
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ordered is an ordered-upgrade scenario on the real kube-apiserver.
type ordered struct {
	*e2e
	run     string
	user    kubernetes.Interface // the administrator's writes, not recorded
	owner   identity.Owner
	patches *nodePatches
	rec     *record.FakeRecorder
}

// pass reconciles once, plays the kubelet, and checks from the recorded
// requests that no node got more than one version-label step.
func (o *ordered) pass() map[string]int {
	t := o.t
	ctx := context.Background()
	m, err := o.modules.Get(ctx, o.ns, "nic")
	require.NoError(t, err)
	_, err = o.r.Reconcile(ctx, m)
	require.NoError(t, err)
	steps := map[string]int{}
	for node, bodies := range o.take() {
		for _, b := range bodies {
			for _, key := range []string{o.owner.VersionWorkerPodLabel(), o.owner.VersionSchedulePodLabel()} {
				if strings.Contains(b, `"`+key+`"`) {
					steps[node]++
				}
			}
			assert.NotContains(t, b, `"`+o.owner.VersionModuleLabel()+`"`, "M is the user's")
		}
	}
	for node, n := range steps {
		assert.LessOrEqual(t, n, 1, "one version-label step per node per pass: %s", node)
	}
	o.kubelet()
	return steps
}

func (o *ordered) take() map[string][]string { return o.patches.take() }

// until makes passes until done holds, at most max.
func (o *ordered) until(max int, what string, done func() bool) {
	for i := 0; i < max; i++ {
		if done() {
			return
		}
		o.pass()
	}
	require.True(o.t, done(), "%s after %d passes", what, max)
}

// labels returns M, W, S, whether .ready is set, and .version.ready.
func (o *ordered) labels(node string) (m, w, s string, ready bool, version string) {
	l := o.node(o.run + "-" + node).Labels
	_, ready = l[o.owner.ReadyLabel()]
	return l[o.owner.VersionModuleLabel()], l[o.owner.VersionWorkerPodLabel()], l[o.owner.VersionSchedulePodLabel()], ready, l[o.owner.VersionReadyLabel()]
}

// setM sets (or, with "", removes) the node's M label, as the
// administrator does.
func (o *ordered) setM(node, v string) {
	if v == "" {
		o.label(node, o.owner.VersionModuleLabel(), nil)
		return
	}
	o.label(node, o.owner.VersionModuleLabel(), &v)
}

// label sets or removes a label as someone else than the Reconciler.
func (o *ordered) label(node, key string, v *string) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]*string{key: v}}})
	require.NoError(o.t, err)
	_, err = o.user.CoreV1().Nodes().Patch(context.Background(), o.run+"-"+node, types.MergePatchType, patch, metav1.PatchOptions{})
	require.NoError(o.t, err)
}

func (o *ordered) loaded() metav1.Condition {
	m, err := o.modules.Get(context.Background(), o.ns, "nic")
	require.NoError(o.t, err)
	c := meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionLoaded)
	require.NotNil(o.t, c)
	return *c
}

func (o *ordered) counts() v1beta1.DaemonSetStatus {
	m, err := o.modules.Get(context.Background(), o.ns, "nic")
	require.NoError(o.t, err)
	require.NotNil(o.t, m.Status.ModuleLoader)
	return *m.Status.ModuleLoader
}

func (o *ordered) image(node string) string {
	obs, ok, err := loader.ObservedOn(o.node(o.run+"-"+node), o.ns, "nic")
	require.NoError(o.t, err)
	if !ok {
		return ""
	}
	return obs.Config.ContainerImage
}

// TestOrderedUpgrade runs KMM's ordered upgrade on a real kube-apiserver
// with real worker Pods (the test plays the kubelet): a versioned Module
// on three labelled nodes and one without the version-module label; a
// bump of version and image; then only the user's M labels move the
// nodes, and W and S step one change a pass, the old version unloads and
// the new one loads, ending with .version.ready=v2. A device-plugin Pod
// on the node holds the removal of W (terminating too), the .ready label
// the addition of W; the node without M never gets a worker.
func TestOrderedUpgrade(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	ctx := context.Background()
	testenv.InstallCRD(t, cfg, v1beta1.CRD())
	patches := &nodePatches{bodies: map[string][]string{}}
	rcfg := rest.CopyConfig(cfg)
	rcfg.Wrap(patches.RoundTrip)
	cs, err := kubernetes.NewForConfig(rcfg)
	require.NoError(t, err)
	user, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	run := fmt.Sprintf("ou%d", rand.Uint32()%100000)
	ns := "kmmkit-" + run
	testenv.Namespace(t, cs, ns)
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		testenv.ReadyNode(t, cs, run+"-"+n, map[string]string{"kmmkit-ou": run}, k56, run+"-"+n+"-boot1")
	}
	reg := registryfake.New()
	img := func(v string) string { return "registry.example.com/" + run + "/nic:" + v + "-" + k56 }
	reg.SetExists(img("v1"), "sha256:v1")
	reg.SetExists(img("v2"), "sha256:v2")
	rec := record.NewFakeRecorder(1000)
	r, err := kmm.NewReconciler(cs, kmm.WithModuleClient(kmm.NewModuleClient(dyn)), kmm.WithImageChecker(reg),
		kmm.WithWorkerPods("quay.io/kmmkit/kmm:test"), kmm.WithEventRecorder(rec), kmm.WithLogger(testr.New(t)))
	require.NoError(t, err)
	o := &ordered{e2e: &e2e{t: t, cs: cs, modules: kmm.NewModuleClient(dyn), r: r, ns: ns, loads: map[string][]string{}},
		run: run, user: user, owner: identity.Domain{}.Owner(ns, "nic"), patches: patches, rec: rec}

	// v1 on n1..n3 (M=v1); n4 is selected but has no M.
	for _, n := range []string{"n1", "n2", "n3"} {
		o.setM(n, "v1")
	}
	mod := nicModule()
	mod.Namespace = ns
	mod.Spec.Selector = map[string]string{"kmmkit-ou": run}
	c := &mod.Spec.ModuleLoader.Container
	c.Version = "v1"
	c.KernelMappings[0].ContainerImage = "registry.example.com/" + run + "/nic:v1-${KERNEL_FULL_VERSION}"
	c.KernelMappings[0].Build = nil
	_, err = o.modules.Create(ctx, mod)
	require.NoError(t, err)
	o.take()
	o.until(12, "v1 on n1..n3", func() bool {
		for _, n := range []string{"n1", "n2", "n3"} {
			if m, w, s, ready, v := o.labels(n); m != "v1" || w != "v1" || s != "v1" || !ready || v != "v1" {
				return false
			}
		}
		return o.loaded().Status == metav1.ConditionTrue
	})
	_, w, s, ready, _ := o.labels("n4")
	assert.Equal(t, []any{"", "", false}, []any{w, s, ready}, "n4 has no M: no labels, nothing loaded")
	assert.Empty(t, o.loads[run+"-n4"], "no worker on n4")
	assert.Equal(t, v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 4, DesiredNumber: 3, AvailableNumber: 3}, o.counts())
	l := o.loaded()
	assert.Equal(t, string(reason.AllNodesLoaded), l.Reason)
	assert.Contains(t, l.Message, "1 selected node(s) have no "+o.owner.VersionModuleLabel()+" label, so nothing is loaded there")
	assert.Contains(t, l.Message, run+"-n4")

	// A steady pass writes nothing on the nodes.
	assert.Empty(t, o.pass(), "no step")
	assert.Empty(t, o.take(), "no node write at all")

	// Bump version and image together: nothing moves without M.
	m, err := o.modules.Get(ctx, ns, "nic")
	require.NoError(t, err)
	m.Spec.ModuleLoader.Container.Version = "v2"
	m.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = "registry.example.com/" + run + "/nic:v2-${KERNEL_FULL_VERSION}"
	_, err = o.modules.Update(ctx, m)
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		assert.Empty(t, o.pass())
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		_, w, s, ready, v := o.labels(n)
		assert.Equal(t, []any{"v1", "v1", true, "v1"}, []any{w, s, ready, v}, "%s keeps v1", n)
		assert.Equal(t, img("v1"), o.image(n))
	}
	l = o.loaded()
	assert.Equal(t, metav1.ConditionFalse, l.Status)
	assert.Equal(t, string(reason.VersionNotRequested), l.Reason, l.Message)
	assert.Contains(t, l.Message, "3 node(s) have "+o.owner.VersionModuleLabel()+` at another version than "v2"`)
	assert.Equal(t, v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 4, DesiredNumber: 3, AvailableNumber: 0}, o.counts(),
		"v1 is loaded, but not the spec's version")

	// A device-plugin Pod of the Module on n1 (the DaemonSet is not this
	// test's): it holds the removal of W, even while terminating.
	dp := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nic-device-plugin-n1", Namespace: ns, Labels: map[string]string{
		o.owner.NameLabel(): "nic", o.owner.RoleLabel(): identity.RoleDevicePlugin}},
		Spec: corev1.PodSpec{NodeName: run + "-n1", Containers: []corev1.Container{{Name: "device-plugin", Image: "example.com/dp:v1"}}}}
	_, err = cs.CoreV1().Pods(ns).Create(ctx, dp, metav1.CreateOptions{})
	require.NoError(t, err)
	o.setM("n1", "v2")
	assert.Equal(t, map[string]int{run + "-n1": 1}, o.pass(), "S goes first, unguarded")
	_, w, s, _, _ = o.labels("n1")
	assert.Equal(t, []string{"v1", ""}, []string{w, s})
	for i := 0; i < 2; i++ {
		assert.Empty(t, o.pass(), "W stays while the device-plugin Pod is there")
	}
	l = o.loaded()
	assert.Contains(t, l.Message, run+"-n1 ("+string(reason.WaitingForDevicePlugin)+")")
	require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, dp.Name, metav1.DeleteOptions{}))
	p, err := cs.CoreV1().Pods(ns).Get(ctx, dp.Name, metav1.GetOptions{})
	require.NoError(t, err, "no kubelet confirms: the Pod is terminating")
	require.NotNil(t, p.DeletionTimestamp)
	assert.Empty(t, o.pass(), "a terminating device-plugin Pod holds W too")
	require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, dp.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	_, err = cs.CoreV1().Pods(ns).Get(ctx, dp.Name, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "%v", err)

	// W goes; the old version unloads (in the same pass: W absent is not
	// desired). Adding W=v2 waits while .ready is there.
	assert.Equal(t, map[string]int{run + "-n1": 1}, o.pass(), "W removed")
	_, w, _, _, _ = o.labels("n1")
	assert.Equal(t, "", w)
	assert.Equal(t, img("v1"), o.image("n1"), "the unload worker has run but is not harvested yet")
	assert.Equal(t, "Unload", o.loads[run+"-n1"][len(o.loads[run+"-n1"])-1])
	assert.Empty(t, o.pass(), "G2: W=v2 waits while v1 is loaded; this pass harvests the unload")
	l = o.loaded()
	assert.Contains(t, l.Message, run+"-n1 ("+string(reason.WaitingForUnload)+")")
	_, _, _, ready, _ = o.labels("n1")
	assert.False(t, ready, "unloaded")
	assert.Equal(t, "", o.image("n1"))

	// .ready itself holds W too (set here by hand, as another loader
	// would leave it).
	o.label("n1", o.owner.ReadyLabel(), ptr.To(""))
	assert.Empty(t, o.pass(), "G2: .ready is there")
	assert.Contains(t, o.loaded().Message, run+"-n1 ("+string(reason.WaitingForUnload)+")")
	o.label("n1", o.owner.ReadyLabel(), nil)

	// W=v2: v2 loads; then S=v2.
	assert.Equal(t, map[string]int{run + "-n1": 1}, o.pass(), "W=v2")
	assert.Equal(t, "Load", o.loads[run+"-n1"][len(o.loads[run+"-n1"])-1])
	o.until(4, "n1 at v2", func() bool {
		m, w, s, ready, v := o.labels("n1")
		return m == "v2" && w == "v2" && s == "v2" && ready && v == "v2"
	})
	assert.Equal(t, img("v2"), o.image("n1"))
	assert.Equal(t, []string{"Load", "Unload", "Load"}, o.loads[run+"-n1"])
	assert.Equal(t, v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 4, DesiredNumber: 3, AvailableNumber: 1}, o.counts())

	// n2 and n3 together; n4 still gets nothing.
	o.setM("n2", "v2")
	o.setM("n3", "v2")
	o.until(12, "n2, n3 at v2", func() bool {
		for _, n := range []string{"n2", "n3"} {
			if _, w, s, ready, v := o.labels(n); w != "v2" || s != "v2" || !ready || v != "v2" {
				return false
			}
		}
		return o.loaded().Status == metav1.ConditionTrue
	})
	for _, n := range []string{"n2", "n3"} {
		assert.Equal(t, []string{"Load", "Unload", "Load"}, o.loads[run+"-"+n], n)
		assert.Equal(t, img("v2"), o.image(n))
	}
	assert.Empty(t, o.loads[run+"-n4"], "no worker on n4, ever")
	assert.Equal(t, v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 4, DesiredNumber: 3, AvailableNumber: 3}, o.counts())

	// M removed from n3: S, then W go, and v2 unloads there.
	o.setM("n3", "")
	o.until(8, "n3 unloaded", func() bool {
		_, w, s, ready, _ := o.labels("n3")
		return w == "" && s == "" && !ready
	})
	assert.Equal(t, "Unload", o.loads[run+"-n3"][len(o.loads[run+"-n3"])-1])
	assert.Equal(t, v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 4, DesiredNumber: 2, AvailableNumber: 2}, o.counts())

	// Every step was an event on the Module.
	close(rec.Events)
	added, removed := 0, 0
	for e := range rec.Events {
		switch {
		case strings.HasPrefix(e, "Normal VersionLabelAdded "):
			added++
		case strings.HasPrefix(e, "Normal VersionLabelRemoved "):
			removed++
		}
	}
	// v1: 3×(W, S); v2 on n1..n3: 3×(S, W removed; W, S added); n3: S, W removed.
	assert.Equal(t, 6+6, added)
	assert.Equal(t, 6+2, removed)
}
