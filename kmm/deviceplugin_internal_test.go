package kmm

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	loaderfake "github.com/kmmkit/kmmkit/loader/fake"
	"github.com/kmmkit/kmmkit/reason"
)

// TestDevicePluginStopHook: nodes in the stop set lose the target label
// (so the DaemonSet's Pod leaves them) while the others keep it, and get
// it back once the set no longer names them; an embedder's domain names
// every key.
func TestDevicePluginStopHook(t *testing.T) {
	ctx := context.Background()
	d := identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
	o := d.Owner("drivers", "nic")
	var nodes []*corev1.Node
	for _, n := range []string{"n1", "n2"} {
		nodes = append(nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"nic": "true", o.ReadyLabel(): ""}}})
	}
	cs := k8sfake.NewClientset(nodes[0], nodes[1])
	r, err := NewReconciler(cs, WithNodeLoader(loaderfake.NewNodeLoader()), WithIdentity(d))
	require.NoError(t, err)
	obj := Object{Namespace: "drivers", Name: "nic", Spec: v1beta1.ModuleSpec{Selector: map[string]string{"nic": "true"},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{},
		DevicePlugin: &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "dp:1"}}}}
	list := func() []*corev1.Node {
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		out := make([]*corev1.Node, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out
	}

	dp, err := r.syncDevicePlugin(ctx, obj, list(), map[string]bool{"n2": true})
	require.NoError(t, err)
	got := list()
	assert.Contains(t, got[0].Labels, "nic.acme.io/nicdriver.drivers.nic.device-plugin-target")
	assert.NotContains(t, got[1].Labels, o.DevicePluginTargetLabel(), "stopped")
	require.NotNil(t, dp.cond)
	assert.Equal(t, string(reason.DevicePluginNotReady), dp.cond.Reason)
	assert.Contains(t, dp.cond.Message, "n2 (stopped for an upgrade)")
	assert.Equal(t, int32(2), dp.status.DesiredNumber, "a stopped node is still desired")
	dss, err := cs.AppsV1().DaemonSets("drivers").List(ctx, metav1.ListOptions{LabelSelector: "nic.acme.io/nicdriver.name=nic,nic.acme.io/role=device-plugin"})
	require.NoError(t, err)
	require.Len(t, dss.Items, 1)
	assert.Equal(t, map[string]string{"nic.acme.io/nicdriver.drivers.nic.ready": "", "nic.acme.io/nicdriver.drivers.nic.device-plugin-target": ""},
		dss.Items[0].Spec.Template.Spec.NodeSelector)

	_, err = r.syncDevicePlugin(ctx, obj, list(), nil)
	require.NoError(t, err)
	assert.Contains(t, list()[1].Labels, o.DevicePluginTargetLabel(), "no longer stopped")
}
