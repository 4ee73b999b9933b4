package identity_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kmmkit/kmmkit/identity"
)

var (
	kmm  = identity.Domain{}
	acme = identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
)

// TestKMMNames pins the default identity to KMM's own keys and names
// (kubernetes-sigs/kernel-module-management: pkg/labels, the worker Pod
// manager and the build resources), byte for byte.
func TestKMMNames(t *testing.T) {
	for _, d := range []identity.Domain{kmm, {Name: identity.KMMDomain}, {Name: identity.KMMDomain, Kind: "Module"}} {
		require.NoError(t, d.Validate())
		o := d.Owner("drivers", "nic")
		require.NoError(t, o.Validate())
		assert.Equal(t, "kmm.node.kubernetes.io/drivers.nic.ready", o.ReadyLabel())
		assert.Equal(t, "kmm.node.kubernetes.io/drivers.nic.version.ready", o.VersionReadyLabel())
		assert.Equal(t, "kmm.node.kubernetes.io/drivers.nic.device-plugin-ready", o.NodeLabel(".device-plugin-ready"))
		assert.Equal(t, "loaded.kmmkit.io/drivers.nic", o.ObservedAnnotation(), "kmmkit's record, unchanged")
		assert.Equal(t, "kmm-worker-node-1-nic", o.WorkerPodName("node-1"))
		assert.Equal(t, map[string]string{
			"app.kubernetes.io/name": "kmm", "app.kubernetes.io/component": "worker", "app.kubernetes.io/part-of": "kmm",
			"kmm.node.kubernetes.io/module.name": "nic", "kmm.node.kubernetes.io/worker-action": "Load",
		}, o.WorkerLabels("Load"))
		assert.Equal(t, "kmm.node.kubernetes.io/module.name=nic,kmm.node.kubernetes.io/worker-action", o.WorkerSelector())
		assert.Equal(t, "nic-build-6-1-0-56-amd64", o.BuildName("6-1-0-56-amd64", 1))
		assert.Equal(t, "nic-build-6-1-0-56-amd64-2", o.BuildName("6-1-0-56-amd64", 2))
		assert.Equal(t, map[string]string{
			"kmm.node.kubernetes.io/module.name": "nic", "kmm.node.kubernetes.io/resource-type": "BuildImage",
			"kmm.node.kubernetes.io/target-kernel": "6-1-0-56-amd64",
			"app.kubernetes.io/name":               "kmm", "app.kubernetes.io/component": "BuildImage", "app.kubernetes.io/part-of": "kmm",
		}, o.BuildLabels("BuildImage", "6-1-0-56-amd64"))
		assert.Equal(t, map[string]string{"module": "drivers/nic"}, o.EventAnnotations())
		assert.Equal(t, "Module drivers/nic", o.String())
	}
}

// TestKMMLongNames: long KMM keys keep the values kmmkit gave them before
// identities existed, so labelled nodes and running Pods are found again.
func TestKMMLongNames(t *testing.T) {
	o := kmm.Owner(strings.Repeat("n", 40), strings.Repeat("m", 30))
	assert.Equal(t, "kmm.node.kubernetes.io/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn.mmmmm-6b0759da26.ready", o.ReadyLabel())
	assert.Equal(t, "kmm.node.kubernetes.io/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn-6b0759da26.version.ready", o.VersionReadyLabel())
	assert.Equal(t, "loaded.kmmkit.io/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn.mmmmmmmmmmm-6b0759da26", o.ObservedAnnotation())
	assert.Equal(t, "kmm-worker-node-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-0f858c44",
		kmm.Owner("d", "nic").WorkerPodName("node-"+strings.Repeat("x", 50)))
}

var hashed = regexp.MustCompile(`-[0-9a-f]{10}$`)

func TestEmbedderNames(t *testing.T) {
	o := acme.Owner("drivers", "nic")
	require.NoError(t, o.Validate())
	assert.Equal(t, "nic.acme.io/nicdriver.drivers.nic.ready", o.ReadyLabel())
	assert.Equal(t, "nic.acme.io/nicdriver.drivers.nic.version.ready", o.VersionReadyLabel())
	assert.Equal(t, "nic.acme.io/nicdriver.drivers.nic.loaded", o.ObservedAnnotation())
	pod := o.WorkerPodName("node-1")
	assert.True(t, strings.HasPrefix(pod, "nicdriver-worker-node-1-nic-"), pod)
	assert.Regexp(t, hashed, pod)
	assert.Equal(t, map[string]string{
		"app.kubernetes.io/name": "kmmkit", "app.kubernetes.io/component": "worker", "app.kubernetes.io/part-of": "nicdriver",
		"nic.acme.io/nicdriver.name": "nic", "nic.acme.io/worker-action": "Unload",
	}, o.WorkerLabels("Unload"))
	assert.Equal(t, "nic.acme.io/nicdriver.name=nic,nic.acme.io/worker-action", o.WorkerSelector())
	b := o.BuildName("6-1-0-56-amd64", 1)
	assert.True(t, strings.HasPrefix(b, "nicdriver-nic-build-6-1-0-56-amd64-"), b)
	assert.Regexp(t, hashed, b)
	assert.Equal(t, b+"-3", o.BuildName("6-1-0-56-amd64", 3))
	assert.Equal(t, map[string]string{"nic.acme.io/nicdriver.name": "nic", "nic.acme.io/resource-type": "BuildImage",
		"nic.acme.io/target-kernel": "6-1-0-56-amd64"}, o.BuildSelector("BuildImage", "6-1-0-56-amd64"))
	assert.Equal(t, map[string]string{"module": "drivers/nic", "kind": "NICDriver", "domain": "nic.acme.io"}, o.EventAnnotations())
	assert.Equal(t, "NICDriver drivers/nic", o.String())
	assert.Equal(t, "NICDriver (nic.acme.io)", acme.String())
}

func TestClusterScopedOwner(t *testing.T) {
	o := acme.Owner("", "nic")
	require.NoError(t, o.Validate())
	assert.Equal(t, "nic.acme.io/nicdriver.nic.ready", o.ReadyLabel())
	assert.Equal(t, "nic.acme.io/nicdriver.nic.loaded", o.ObservedAnnotation())
	assert.Equal(t, "NICDriver nic", o.String())
	assert.Equal(t, "nic", o.Ref())
	assert.NotEqual(t, acme.Owner("drivers", "nic").WorkerPodName("n1"), o.WorkerPodName("n1"),
		"the namespace is part of the hash")
	err := kmm.Owner("", "nic").Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cluster-scoped owner needs a Domain")
}

// TestNamesStayValid: whatever the lengths, every key is a valid label
// key, every value a valid label value and every name a valid Pod name
// of at most 63 characters.
func TestNamesStayValid(t *testing.T) {
	long := strings.Repeat("a", 253)
	dotted := strings.Repeat("a.b-", 60) + "c"
	for _, o := range []identity.Owner{
		kmm.Owner(strings.Repeat("n", 63), strings.Repeat("m", 60)),
		kmm.Owner("ns", long),
		acme.Owner(strings.Repeat("n", 63), long),
		acme.Owner("", dotted),
		identity.Domain{Name: strings.Repeat("d", 60) + ".example.com", Kind: strings.Repeat("K", 40)}.Owner("ns", long),
	} {
		for _, k := range []string{o.ReadyLabel(), o.VersionReadyLabel(), o.ObservedAnnotation(), o.NameLabel(), o.ActionLabel(),
			o.NodeLabel(".device-plugin-ready"), o.ResourceTypeLabel(), o.TargetKernelLabel()} {
			assert.Empty(t, validation.IsQualifiedName(k), k)
		}
		assert.True(t, strings.HasSuffix(o.ReadyLabel(), ".ready"), o.ReadyLabel())
		assert.True(t, strings.HasSuffix(o.VersionReadyLabel(), ".version.ready"), o.VersionReadyLabel())
		for k, v := range o.WorkerLabels("Load") {
			assert.Empty(t, validation.IsValidLabelValue(v), "%s=%s", k, v)
		}
		for k, v := range o.BuildLabels("BuildImage", strings.Repeat("k", 63)) {
			assert.Empty(t, validation.IsValidLabelValue(v), "%s=%s", k, v)
		}
		_, err := labels.Parse(o.WorkerSelector())
		assert.NoError(t, err)
		assert.True(t, o.IsWorker(o.WorkerLabels("Load")))
		for _, node := range []string{"n1", strings.Repeat("x", 63), "ip-10-0-0-1.ec2.internal." + strings.Repeat("y", 40)} {
			p := o.WorkerPodName(node)
			assert.LessOrEqual(t, len(p), 63, p)
			assert.Empty(t, validation.IsDNS1123Subdomain(p), p)
		}
		b := o.BuildName(strings.Repeat("k", 63), 2)
		assert.Empty(t, validation.IsDNS1123Subdomain(b), b)
	}
	assert.Equal(t, "short", identity.LabelValue("short"))
	assert.NotEqual(t, identity.LabelValue(long), identity.LabelValue(long+"b"))
}

// TestOwnersNeverCollide: KMM's Module, two operators' kinds of the same
// name, and two kinds of one operator, in one namespace, share no key,
// Pod, build name or selector.
func TestOwnersNeverCollide(t *testing.T) {
	owners := []identity.Owner{
		kmm.Owner("drivers", "nic"),
		acme.Owner("drivers", "nic"),
		identity.Domain{Name: "gpu.example.com", Kind: "NICDriver"}.Owner("drivers", "nic"),
		identity.Domain{Name: "nic.acme.io", Kind: "NICFirmware"}.Owner("drivers", "nic"),
		identity.Domain{Name: "nic.acme.io", Kind: "NICCluster"}.Owner("", "nic"),
		// KMM Module "drivers.nic" in namespace "nicdriver" spells
		// nicdriver.drivers.nic, as the acme key does, but in KMM's domain.
		kmm.Owner("nicdriver", "drivers.nic"),
		kmm.Owner("drivers", "nic2"),
	}
	seen := map[string]string{}
	add := func(what, v string, o identity.Owner) {
		t.Helper()
		key := what + " " + v
		if other, dup := seen[key]; dup {
			t.Errorf("%s %s of %s is also that of %s", what, v, o, other)
		}
		seen[key] = fmt.Sprintf("%s (%s)", o, o.Domain)
	}
	for _, o := range owners {
		add("label", o.ReadyLabel(), o)
		add("label", o.VersionReadyLabel(), o)
		add("annotation", o.ObservedAnnotation(), o)
		add("pod", o.WorkerPodName("n1"), o)
		add("build", o.BuildName("6-1-0-56-amd64", 1), o)
		for _, other := range owners {
			if other != o {
				assert.False(t, other.IsWorker(o.WorkerLabels("Load")), "%s would take %s's worker Pod", other, o)
				sel := labels.SelectorFromSet(other.BuildSelector("BuildImage", "k"))
				assert.False(t, sel.Matches(labels.Set(o.BuildLabels("BuildImage", "k"))), "%s would take %s's build", other, o)
			}
		}
	}
	// KMM's own names are ambiguous (node a-b + module c = node a +
	// module b-c); an embedder's are not.
	assert.Equal(t, kmm.Owner("d", "c").WorkerPodName("a-b"), kmm.Owner("d", "b-c").WorkerPodName("a"), "KMM's scheme, kept")
	assert.NotEqual(t, acme.Owner("d", "c").WorkerPodName("a-b"), acme.Owner("d", "b-c").WorkerPodName("a"))
}

func TestDomainValidate(t *testing.T) {
	for _, tc := range []struct {
		d    identity.Domain
		want string
	}{
		{identity.Domain{Kind: "NICDriver"}, `kind "NICDriver" needs a domain of its own`},
		{identity.Domain{Name: identity.KMMDomain, Kind: "NICDriver"}, "is KMM's"},
		{identity.Domain{Name: "nic.acme.io"}, `kind is empty: domain "nic.acme.io"`},
		{identity.Domain{Name: "Nic_Acme", Kind: "NICDriver"}, `domain "Nic_Acme"`},
		{identity.Domain{Name: "nic.kubernetes.io", Kind: "NICDriver"}, "reserved for Kubernetes"},
		{identity.Domain{Name: "k8s.io", Kind: "NICDriver"}, "reserved for Kubernetes"},
		{identity.Domain{Name: "nic.acme.io", Kind: "NIC-Driver"}, `kind "NIC-Driver": must be letters and digits`},
		{identity.Domain{Name: "nic.acme.io", Kind: strings.Repeat("K", 41)}, "longer than 40"},
	} {
		err := tc.d.Validate()
		if assert.Error(t, err, "%+v", tc.d) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
	assert.NoError(t, identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}.Validate())
	assert.Error(t, acme.Owner("drivers", "").Validate())
}

// TestIsStatusLabel tells the labels kmmkit writes for a domain's owners
// (long, hashed keys included) from every other label, KMM's user-set
// ordered-upgrade label and another domain's or kind's labels among them.
func TestIsStatusLabel(t *testing.T) {
	long := strings.Repeat("n", 70)
	gpu := identity.Domain{Name: "nic.acme.io", Kind: "GPUDriver"}
	for _, d := range []identity.Domain{kmm, acme, gpu} {
		for _, o := range []identity.Owner{d.Owner("drivers", "nic"), d.Owner("drivers", long)} {
			assert.True(t, d.IsStatusLabel(o.ReadyLabel()), o.ReadyLabel())
			assert.True(t, d.IsStatusLabel(o.VersionReadyLabel()), o.VersionReadyLabel())
			for _, other := range []identity.Domain{kmm, acme, gpu} {
				if other != d {
					assert.False(t, other.IsStatusLabel(o.ReadyLabel()), "%s sees %s", other, o.ReadyLabel())
				}
			}
		}
	}
	assert.True(t, acme.IsStatusLabel(acme.Owner("", "nic").ReadyLabel()), "cluster-scoped")
	for _, key := range []string{"kmm.node.kubernetes.io/version-module.drivers.nic", "example.com/ready",
		"nic.acme.io/nicdriver.drivers.nic.loaded", "node-role.kubernetes.io/worker", "nic.acme.io/worker-action"} {
		for _, d := range []identity.Domain{kmm, acme} {
			assert.False(t, d.IsStatusLabel(key), "%s claims %s", d, key)
		}
	}
}
