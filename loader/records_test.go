package loader

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func recordNode(t *testing.T, name, key string, obs *Observed) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	if obs != nil {
		raw, err := json.Marshal(obs)
		require.NoError(t, err)
		n.Annotations[key] = string(raw)
	}
	return n
}

// TestRecordCache: a record is decoded once per value; a new value is
// decoded again (never the old one returned); records that differ only
// in the boot ID share their config; a damaged record is an error naming
// node and key; removed records and gone nodes are forgotten.
func TestRecordCache(t *testing.T) {
	const key = "loaded.kmmkit.io/drivers.nic"
	c := newRecordCache()
	cfg := v1beta1.ModuleConfig{KernelVersion: "6.1.0-26-amd64", ContainerImage: "registry.example.com/nic:6.1",
		Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic", Parameters: []string{"debug=1"}}}
	a := recordNode(t, "a", key, &Observed{Config: cfg, BootID: "boot-a", Version: "1"})
	b := recordNode(t, "b", key, &Observed{Config: cfg, BootID: "boot-b", Version: "1"})

	first, err := c.observed(a, key)
	require.NoError(t, err)
	assert.Equal(t, "boot-a", first.BootID)
	again, err := c.observed(a, key)
	require.NoError(t, err)
	assert.Equal(t, first, again)
	assert.Equal(t, 1, c.decodes, "an unchanged record is decoded again")
	again.BootID = "changed by the caller"
	mine, err := c.observed(a, key)
	require.NoError(t, err)
	assert.Equal(t, "boot-a", mine.BootID, "one caller's copy is another's")

	other, err := c.observed(b, key)
	require.NoError(t, err)
	assert.Equal(t, "boot-b", other.BootID)
	assert.Same(t, &first.Config.Modprobe.Parameters[0], &other.Config.Modprobe.Parameters[0], "records of one config do not share it")

	next := cfg
	next.ContainerImage = "registry.example.com/nic:6.1-2"
	a2 := recordNode(t, "a", key, &Observed{Config: next, BootID: "boot-a", Version: "2"})
	changed, err := c.observed(a2, key)
	require.NoError(t, err)
	assert.Equal(t, 3, c.decodes)
	assert.Equal(t, "registry.example.com/nic:6.1-2", changed.Config.ContainerImage)
	assert.Equal(t, "2", changed.Version)
	assert.Equal(t, "registry.example.com/nic:6.1", other.Config.ContainerImage, "a shared config was modified")

	bad := recordNode(t, "a", key, nil)
	bad.Annotations[key] = `{"config":`
	_, err = c.observed(bad, key)
	require.EqualError(t, err, "node a: annotation loaded.kmmkit.io/drivers.nic: unexpected end of JSON input")

	gone, err := c.observed(recordNode(t, "a", key, nil), key)
	require.NoError(t, err)
	assert.Nil(t, gone)
	assert.NotContains(t, c.byKey[key], "a", "a removed record is kept")

	c.forget(key, func(node string) bool { return node != "b" })
	assert.NotContains(t, c.byKey, key, "the record of a node that is gone is kept")
}
