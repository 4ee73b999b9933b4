package kmm_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
)

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := kmm.NewMetrics(reg)
	require.NoError(t, err)
	h := cluster(t, kmm.WithMetrics(m))
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)

	vals := gather(t, reg)
	assert.Equal(t, 1.0, vals["kmm_module_num"])
	assert.Equal(t, 1.0, vals["kmm_in_cluster_build_num"])
	assert.Equal(t, 0.0, vals["kmm_in_cluster_sign_num"])
	assert.Equal(t, 3.0, vals[`kmmkit_module_nodes{module=nic,namespace=drivers,owner=Module (kmm.node.kubernetes.io),state=available}`])
	assert.Greater(t, vals["kmmkit_reconcile_duration_seconds{result=ok}"], 0.0, "passes observed")
	assert.Greater(t, vals["kmmkit_image_checks_total{result=missing}"], 0.0)
	assert.Equal(t, 1.0, vals["kmmkit_build_syncs_total{phase=Succeeded}"])

	// An embedder's owner of the same name is a series of its own.
	acme := cluster(t, kmm.WithMetrics(m), kmm.WithIdentity(identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}))
	require.NoError(t, acme.CreateModule(ctx, nicModule()))
	_, err = acme.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	vals = gather(t, reg)
	assert.Equal(t, 3.0, vals[`kmmkit_module_nodes{module=nic,namespace=drivers,owner=NICDriver (nic.acme.io),state=available}`])
	assert.Equal(t, 3.0, vals[`kmmkit_module_nodes{module=nic,namespace=drivers,owner=Module (kmm.node.kubernetes.io),state=available}`])
	assert.Equal(t, 2.0, vals["kmm_module_num"])

	// Registering twice on the same registry is an error, not a panic.
	_, err = kmm.NewMetrics(reg)
	assert.Error(t, err)

	// A deleted Module leaves the gauges.
	require.NoError(t, h.DeleteModule(ctx, "drivers", "nic"))
	_, err = h.ReconcileUntilStable(ctx, "drivers", "nic", 10)
	require.NoError(t, err)
	vals = gather(t, reg)
	assert.Equal(t, 1.0, vals["kmm_module_num"])
	assert.NotContains(t, vals, `kmmkit_module_nodes{module=nic,namespace=drivers,owner=Module (kmm.node.kubernetes.io),state=available}`)
	assert.Contains(t, vals, `kmmkit_module_nodes{module=nic,namespace=drivers,owner=NICDriver (nic.acme.io),state=available}`)
}

// gather flattens the registry: name{label=value,...} → value (a
// histogram's sample count).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if len(m.GetLabel()) > 0 {
				key += "{"
				for i, l := range m.GetLabel() {
					if i > 0 {
						key += ","
					}
					key += l.GetName() + "=" + l.GetValue()
				}
				key += "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
