package loader_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
)

// TestMaxWorkersPacesTheRollout: with WithMaxWorkers(2), a Module desired
// on 5 nodes never has more than 2 worker Pods; the nodes that wait say
// so (Loading, reason.Loading, naming the limit), and each pass harvests
// the finished workers and starts as many new ones.
func TestMaxWorkersPacesTheRollout(t *testing.T) {
	ctx := context.Background()
	cs := k8sfake.NewClientset()
	c := &cluster{cs: cs, ns: "drivers"}
	l, err := loader.NewPodLoader(cs, "quay.io/kmmkit/kmm:v0.1", loader.WithMaxWorkers(2))
	require.NoError(t, err)
	var nodes []*corev1.Node
	desired := map[string]*loader.PodRequest{}
	for i := 0; i < 5; i++ {
		n := c.node(t, fmt.Sprintf("n%d", i), "boot-1")
		nodes = append(nodes, n)
		desired[n.Name] = desiredConfig(n.Status.NodeInfo.KernelVersion, "registry.example.com/nic:1")
	}
	req := loader.SyncRequest{Namespace: "drivers", Module: "nic", Nodes: nodes, Desired: desired}
	// Pass 1 starts n0 and n1; pass 2 harvests them and starts n2 and n3;
	// pass 3 harvests those and starts n4; pass 4 harvests it.
	for pass := 1; ; pass++ {
		require.LessOrEqual(t, pass, 4, "not loaded everywhere after 4 passes")
		states, err := l.Sync(ctx, req)
		require.NoError(t, err)
		pods := c.pods(t)
		assert.LessOrEqual(t, len(pods), 2, "pass %d: more worker pods than WithMaxWorkers(2)", pass)
		loaded, waiting := 0, 0
		for _, s := range states {
			switch {
			case s.Phase == loader.PhaseLoaded:
				loaded++
			case s.Condition.Message == `waiting to Load the module: 2 worker pods of Module drivers/nic are running, the most at once (WithMaxWorkers)`:
				waiting++
				assert.Equal(t, loader.PhaseLoading, s.Phase)
				assert.Equal(t, string(reason.Loading), s.Condition.Reason)
				assert.NotZero(t, s.RequeueAfter)
			}
		}
		assert.Equal(t, 5-loaded-len(pods), waiting, "pass %d: every node without a worker waits", pass)
		if loaded == 5 {
			assert.Equal(t, 4, pass)
			break
		}
		for _, p := range pods {
			c.kubelet(t, p.Name, succeeded)
		}
	}
	for _, n := range nodes {
		got, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		require.NoError(t, err)
		_, ok := got.Labels[loader.ReadyLabel("drivers", "nic")]
		assert.True(t, ok, "node %s has no ready label", n.Name)
	}
}

func TestWithMaxWorkersRefusesANegativeNumber(t *testing.T) {
	_, err := loader.NewPodLoader(k8sfake.NewClientset(), "quay.io/kmmkit/kmm:v0.1", loader.WithMaxWorkers(-1))
	require.EqualError(t, err, "pod loader: WithMaxWorkers(-1): the number must not be negative (0 means no limit)")
}
