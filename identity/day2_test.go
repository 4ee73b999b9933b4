package identity_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kmmkit/kmmkit/identity"
)

// TestKMMDay2Keys pins the ordered-upgrade and device-plugin keys to
// KMM's (pkg/labels/labels.go, internal/utils/kmmlabels.go).
func TestKMMDay2Keys(t *testing.T) {
	o := kmm.Owner("drivers", "nic")
	assert.Equal(t, "kmm.node.kubernetes.io/version-module.drivers.nic", o.VersionModuleLabel())
	assert.Equal(t, "beta.kmm.node.kubernetes.io/version-worker-pod.drivers.nic", o.VersionWorkerPodLabel())
	assert.Equal(t, "beta.kmm.node.kubernetes.io/version-schedule-pod.drivers.nic", o.VersionSchedulePodLabel())
	assert.Equal(t, "kmm.node.kubernetes.io/drivers.nic.device-plugin-target", o.DevicePluginTargetLabel())
	assert.Equal(t, "kmm.node.kubernetes.io/drivers.nic.device-plugin-ready", o.DevicePluginReadyLabel())
	assert.Equal(t, "kmm.node.kubernetes.io/drivers.nic.dra-ready", o.DRAReadyLabel())
	assert.Equal(t, "kmm.node.kubernetes.io/role", o.RoleLabel())
}

func TestEmbedderDay2Keys(t *testing.T) {
	o := acme.Owner("drivers", "nic")
	assert.Equal(t, "nic.acme.io/version-module.nicdriver.drivers.nic", o.VersionModuleLabel())
	assert.Equal(t, "beta.nic.acme.io/version-worker-pod.nicdriver.drivers.nic", o.VersionWorkerPodLabel())
	assert.Equal(t, "beta.nic.acme.io/version-schedule-pod.nicdriver.drivers.nic", o.VersionSchedulePodLabel())
	assert.Equal(t, "nic.acme.io/nicdriver.drivers.nic.device-plugin-target", o.DevicePluginTargetLabel())
	assert.Equal(t, "nic.acme.io/role", o.RoleLabel())
	assert.Equal(t, "nic.acme.io/version-module.nicdriver.nic", acme.Owner("", "nic").VersionModuleLabel())
}

// TestDay2KeysStayValid: long owners get valid, distinct keys.
func TestDay2KeysStayValid(t *testing.T) {
	long := strings.Repeat("a", 253)
	seen := map[string]identity.Owner{}
	for _, o := range []identity.Owner{
		kmm.Owner(strings.Repeat("n", 63), strings.Repeat("m", 60)),
		kmm.Owner(strings.Repeat("n", 63), strings.Repeat("m", 61)),
		kmm.Owner("ns", long),
		acme.Owner(strings.Repeat("n", 63), long),
		acme.Owner("", long),
		identity.Domain{Name: strings.Repeat("d", 60) + ".example.com", Kind: strings.Repeat("K", 40)}.Owner("ns", long),
	} {
		for _, k := range []string{o.VersionModuleLabel(), o.VersionWorkerPodLabel(), o.VersionSchedulePodLabel(),
			o.DevicePluginTargetLabel(), o.DevicePluginReadyLabel(), o.DRAReadyLabel(), o.RoleLabel()} {
			assert.Empty(t, validation.IsQualifiedName(k), k)
			if k == o.RoleLabel() {
				continue
			}
			if other, dup := seen[k]; dup {
				t.Errorf("%s of %s is also %s's", k, o, other)
			}
			seen[k] = o
		}
		assert.True(t, strings.HasSuffix(o.DevicePluginTargetLabel(), ".device-plugin-target"))
	}
}
