package kmm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/fakeapi"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	registryfake "github.com/kmmkit/kmmkit/registry/fake"
)

// tenant is one operator embedding kmmkit (or KMM's own Module), with its
// own clientset, so what it did can be read back.
type tenant struct {
	name  string
	id    identity.Domain
	obj   kmm.Object
	cs    *k8sfake.Clientset
	r     *kmm.Reconciler
	owner identity.Owner
}

func (tn *tenant) podNamespace() string {
	if tn.obj.PodNamespace != "" {
		return tn.obj.PodNamespace
	}
	return tn.obj.Namespace
}

// TestIdentitiesNeverShare: KMM's Module drivers/nic, two vendors'
// NICDriver drivers/nic and a cluster-scoped NICFleet nic are built and
// loaded on the same nodes by four Reconcilers; none of them ever writes
// another's Pod, label or annotation, and unloading one leaves the others
// as they were.
func TestIdentitiesNeverShare(t *testing.T) {
	ctx := context.Background()
	var objs []runtime.Object
	for _, n := range []string{"n1", "n2"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"nic": "true"}}}
		node.Status.NodeInfo = corev1.NodeSystemInfo{KernelVersion: "6.1.0-56-amd64", BootID: "boot-1"}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		objs = append(objs, node)
	}
	for _, ns := range []string{"drivers", "acme-system"} {
		objs = append(objs, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "nic-build", Namespace: ns},
			Data: map[string]string{"dockerfile": "FROM scratch\n"}})
	}
	api, err := fakeapi.New(objs...)
	require.NoError(t, err)
	admin := api.Client()
	images := registryfake.New()

	spec := func(vendor string) v1beta1.ModuleSpec {
		return v1beta1.ModuleSpec{
			Selector: map[string]string{"nic": "true"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic"},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$",
					ContainerImage: "registry.example.com/" + vendor + "/nic:${MOD_NAMESPACE}-${KERNEL_FULL_VERSION}",
					Build:          &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-build"}}}},
			}},
		}
	}
	tenants := []*tenant{
		{name: "kmm", obj: kmm.Object{Namespace: "drivers", Name: "nic", Spec: spec("kmm")}},
		{name: "acme", id: identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}, obj: kmm.Object{Namespace: "drivers", Name: "nic", Spec: spec("acme")}},
		{name: "other vendor", id: identity.Domain{Name: "gpu.example.com", Kind: "NICDriver"}, obj: kmm.Object{Namespace: "drivers", Name: "nic", Spec: spec("other")}},
		{name: "cluster-scoped", id: identity.Domain{Name: "nic.acme.io", Kind: "NICFleet"},
			obj: kmm.Object{Name: "nic", PodNamespace: "acme-system", Spec: spec("fleet"),
				Owner: &metav1.OwnerReference{APIVersion: "nic.acme.io/v1", Kind: "NICFleet", Name: "nic", UID: "7d9c2f4e-3b1a-4c8e-9f6d-2a5b8c1e0f3d"}}},
	}
	for _, tn := range tenants {
		tn.cs = api.Client()
		tn.owner = tn.id.Owner(tn.obj.Namespace, tn.obj.Name)
		pl, err := loader.NewPodLoader(tn.cs, "quay.io/kmmkit/kmm:v0.1")
		require.NoError(t, err)
		tn.r, err = kmm.NewReconciler(tn.cs, kmm.WithIdentity(tn.id), kmm.WithNodeLoader(pl), kmm.WithImageChecker(images),
			kmm.WithBuilder(newKaniko(t, tn.cs)))
		require.NoError(t, err)
	}

	// kubelet finishes every Pod; a finished build has pushed its image.
	kubelet := func() int {
		pods, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		n := 0
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodSucceeded {
				continue
			}
			n++
			if c := p.Spec.Containers[0]; c.Name == "kaniko" {
				// The Pod pushes to the staging tag; the image the
				// Builder then lints and publishes is played as there.
				images.SetExists(strings.TrimSuffix(c.Args[1], "-kmmkit-unlinted"), "sha256:"+strings.Repeat("a", 64))
			}
			p.Status.Phase = corev1.PodSucceeded
			_, err := admin.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			require.NoError(t, err)
		}
		return n
	}
	settle := func() map[string]kmm.Result {
		t.Helper()
		out := map[string]kmm.Result{}
		for i := 0; i < 30; i++ {
			for _, tn := range tenants {
				res, err := tn.r.ReconcileSpec(ctx, tn.obj)
				require.NoError(t, err, tn.name)
				tn.obj.Status = res.Status
				out[tn.name] = res
			}
			if kubelet() == 0 {
				// Every worker is done and gone. (Succeeded build Pods stay:
				// once the image exists, the builder is not asked again.)
				pods, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
				require.NoError(t, err)
				workers := 0
				for _, p := range pods.Items {
					if p.Spec.Containers[0].Name == "worker" {
						workers++
					}
				}
				if workers == 0 {
					return out
				}
			}
		}
		pods, _ := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		for _, p := range pods.Items {
			t.Logf("pod %s/%s %s", p.Namespace, p.Name, p.Status.Phase)
		}
		for _, tn := range tenants {
			for _, c := range tn.obj.Status.Conditions {
				t.Logf("%s: %s %s %s", tn.name, c.Type, c.Reason, c.Message)
			}
		}
		t.Fatal("no steady state after 30 passes")
		return nil
	}
	settle()

	nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, n := range nodes.Items {
		for _, tn := range tenants {
			assert.Contains(t, n.Labels, tn.owner.ReadyLabel(), "%s on %s", tn.name, n.Name)
			obs, ok, err := loader.ObservedBy(&n, tn.owner)
			require.NoError(t, err)
			require.True(t, ok, "%s on %s", tn.name, n.Name)
			vendor := map[string]string{"kmm": "kmm", "acme": "acme", "other vendor": "other", "cluster-scoped": "fleet"}[tn.name]
			assert.Equal(t, "registry.example.com/"+vendor+"/nic:"+tn.podNamespace()+"-6.1.0-56-amd64", obs.Config.ContainerImage,
				"%s's own module on %s (MOD_NAMESPACE is where its Pods run)", tn.name, n.Name)
		}
		assert.Contains(t, n.Labels, "kmm.node.kubernetes.io/drivers.nic.ready", "KMM's own label for KMM's Module")
		assert.Contains(t, n.Labels, "nic.acme.io/nicdriver.drivers.nic.ready")
		assert.Contains(t, n.Labels, "nic.acme.io/nicfleet.nic.ready")
	}
	for _, tn := range tenants {
		assert.Equal(t, int32(2), tn.obj.Status.ModuleLoader.AvailableNumber, tn.name)
	}

	// What each Reconciler wrote is its own: Pods it created carry its
	// labels (and the cluster-scoped owner's reference), Pods it deleted
	// have its names, node patches touch its keys only.
	audit := func() map[string]int {
		t.Helper()
		created := map[string]int{}
		for _, tn := range tenants {
			mine := map[string]bool{tn.owner.BuildName("6-1-0-56-amd64", 1): true}
			for _, n := range []string{"n1", "n2"} {
				mine[tn.owner.WorkerPodName(n)] = true
			}
			keys := map[string]bool{tn.owner.ReadyLabel(): true, tn.owner.VersionReadyLabel(): true, tn.owner.ObservedAnnotation(): true}
			for _, a := range tn.cs.Actions() {
				switch act := a.(type) {
				case k8stesting.CreateActionImpl:
					if p, ok := act.GetObject().(*corev1.Pod); ok {
						created[tn.name]++
						assert.True(t, mine[p.Name], "%s created %s", tn.name, p.Name)
						assert.Equal(t, tn.podNamespace(), p.Namespace, tn.name)
						if p.Labels[tn.owner.ActionLabel()] != "" {
							assert.True(t, tn.owner.IsWorker(p.Labels), "%s's worker %s", tn.name, p.Name)
						} else {
							assert.Equal(t, "nic", p.Labels[tn.owner.NameLabel()], "%s's build %s", tn.name, p.Name)
						}
						if tn.obj.Owner != nil {
							assert.Equal(t, []metav1.OwnerReference{*tn.obj.Owner}, p.OwnerReferences)
						}
					}
				case k8stesting.DeleteActionImpl:
					assert.True(t, mine[act.GetName()], "%s deleted %s", tn.name, act.GetName())
				case k8stesting.PatchActionImpl:
					var patch struct {
						Metadata struct{ Labels, Annotations map[string]any } `json:"metadata"`
					}
					require.NoError(t, json.Unmarshal(act.GetPatch(), &patch))
					for k := range patch.Metadata.Labels {
						assert.True(t, keys[k], "%s patched label %s", tn.name, k)
					}
					for k := range patch.Metadata.Annotations {
						assert.True(t, keys[k], "%s patched annotation %s", tn.name, k)
					}
				case k8stesting.UpdateActionImpl:
					t.Errorf("%s updated %s %s", tn.name, act.GetResource().Resource, act.GetObject())
				}
			}
		}
		return created
	}
	assert.Equal(t, map[string]int{"kmm": 3, "acme": 3, "other vendor": 3, "cluster-scoped": 3}, audit(),
		"one build and two workers each")
	fleetBuild, err := admin.CoreV1().Pods("acme-system").Get(ctx, tenants[3].owner.BuildName("6-1-0-56-amd64", 1), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, fleetBuild.Spec.Containers[0].Args, "MOD_NAMESPACE=acme-system", "a cluster-scoped owner builds in its PodNamespace")
	assert.Equal(t, []metav1.OwnerReference{*tenants[3].obj.Owner}, fleetBuild.OwnerReferences)

	// The acme NICDriver goes: its module is unloaded, its keys leave the
	// nodes, and nothing of the others changes.
	before := map[string]map[string]string{}
	for _, n := range nodes.Items {
		before[n.Name] = map[string]string{}
		for k, v := range n.Labels {
			before[n.Name]["label "+k] = v
		}
		for k, v := range n.Annotations {
			before[n.Name]["annotation "+k] = v
		}
	}
	acme := tenants[1]
	acme.obj.Deleting = true
	var done bool
	for i := 0; i < 10 && !done; i++ {
		res, err := acme.r.ReconcileSpec(ctx, acme.obj)
		require.NoError(t, err)
		done = res.Done
		kubelet()
	}
	require.True(t, done, "the acme NICDriver unloads")
	nodes, err = admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, n := range nodes.Items {
		after := map[string]string{}
		for k, v := range n.Labels {
			after["label "+k] = v
		}
		for k, v := range n.Annotations {
			after["annotation "+k] = v
		}
		want := map[string]string{}
		for k, v := range before[n.Name] {
			if !strings.Contains(k, "nic.acme.io/nicdriver.") {
				want[k] = v
			}
		}
		assert.Equal(t, want, after, "node %s: only acme's keys went", n.Name)
	}
	// The others are still steady: another pass writes nothing.
	for _, tn := range tenants {
		tn.cs.ClearActions()
	}
	for _, tn := range []*tenant{tenants[0], tenants[2], tenants[3]} {
		res, err := tn.r.ReconcileSpec(ctx, tn.obj)
		require.NoError(t, err)
		assert.Equal(t, int32(2), res.Status.ModuleLoader.AvailableNumber, tn.name)
		for _, a := range tn.cs.Actions() {
			assert.Contains(t, []string{"get", "list"}, a.GetVerb(), "%s: %s %s after acme went", tn.name, a.GetVerb(), a.GetResource().Resource)
		}
	}
	audit()
}

// TestObjectIdentityErrors: what a Reconciler refuses, naming the field.
func TestObjectIdentityErrors(t *testing.T) {
	ctx := context.Background()
	api, err := fakeapi.New()
	require.NoError(t, err)
	cs := api.Client()
	_, err = kmm.NewReconciler(cs, kmm.WithIdentity(identity.Domain{Name: "nic.acme.io"}), kmm.WithNodeLoader(noLoader{}),
		kmm.WithImageChecker(registryfake.New()))
	assert.ErrorContains(t, err, `kmm: WithIdentity: identity: kind is empty: domain "nic.acme.io"`)

	kmmR, err := kmm.NewReconciler(cs, kmm.WithNodeLoader(noLoader{}), kmm.WithImageChecker(registryfake.New()))
	require.NoError(t, err)
	acmeR, err := kmm.NewReconciler(cs, kmm.WithIdentity(identity.Domain{Name: "nic.acme.io", Kind: "NICFleet"}),
		kmm.WithNodeLoader(noLoader{}), kmm.WithImageChecker(registryfake.New()))
	require.NoError(t, err)
	for _, c := range []struct {
		r    *kmm.Reconciler
		obj  kmm.Object
		want string
	}{
		{kmmR, kmm.Object{Namespace: "drivers"}, "needs a name"},
		{kmmR, kmm.Object{Name: "nic", PodNamespace: "x"}, "KMM's Module is namespaced; a cluster-scoped owner needs a Domain of its own"},
		{acmeR, kmm.Object{Name: "nic"}, "cluster-scoped NICFleet nic needs Object.PodNamespace"},
		{acmeR, kmm.Object{Namespace: "drivers", Name: "nic", PodNamespace: "acme-system"},
			`Object.PodNamespace "acme-system" of NICFleet drivers/nic differs from its namespace`},
	} {
		_, err := c.r.ReconcileSpec(ctx, c.obj)
		assert.ErrorContains(t, err, c.want, fmt.Sprintf("%+v", c.obj))
	}
}

// noLoader fails the test's expectations if it is ever called.
type noLoader struct{}

func (noLoader) Sync(context.Context, loader.SyncRequest) ([]loader.NodeState, error) {
	return nil, fmt.Errorf("the loader must not be reached")
}
