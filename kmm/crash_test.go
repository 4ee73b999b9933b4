package kmm_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/kmmtest"
	"github.com/kmmkit/kmmkit/loader"
)

// crashAfter makes the harness's API calls fail from the n-th on and
// cancels ctx then, as if the process died at that point.
type crashAfter struct {
	mu      sync.Mutex
	n, seen int
	cancel  context.CancelFunc
	off     bool
}

func (c *crashAfter) react(k8stesting.Action) (bool, runtime.Object, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.off {
		return false, nil, nil
	}
	c.seen++
	if c.seen >= c.n {
		c.cancel()
		return true, nil, errors.New("crashed")
	}
	return false, nil, nil
}

// kubelet finishes every worker Pod successfully, as a kubelet would.
func kubelet(t *testing.T, h *kmmtest.Harness) int {
	ctx := context.Background()
	pods, err := h.Clientset.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		p.Status.Phase = corev1.PodSucceeded
		_, err := h.Clientset.CoreV1().Pods("drivers").UpdateStatus(ctx, p, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	return len(pods.Items)
}

// settle reconciles, playing the kubelet, until nothing is left to do.
func settle(t *testing.T, h *kmmtest.Harness) {
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		res, err := h.Reconcile(ctx, "drivers", "nic")
		require.NoError(t, err)
		if kubelet(t, h) == 0 && (res.RequeueAfter == 0 || res.RequeueAfter.Minutes() >= 1) {
			return
		}
	}
	t.Fatal("no steady state after 30 passes")
}

// outcome is what must be the same however the first pass was cut.
func outcome(t *testing.T, h *kmmtest.Harness) string {
	ctx := context.Background()
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	var lines []string
	nodes, err := h.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, n := range nodes.Items {
		obs, ok, err := loader.ObservedOn(&n, "drivers", "nic")
		require.NoError(t, err)
		_, ready := n.Labels[loader.ReadyLabel("drivers", "nic")]
		if ok {
			lines = append(lines, n.Name+" "+obs.Config.ContainerImage)
		}
		if ready {
			lines = append(lines, n.Name+" ready")
		}
	}
	sort.Strings(lines)
	for _, c := range m.Status.Conditions {
		lines = append(lines, c.Type+"="+string(c.Status)+" "+c.Reason)
	}
	lines = append(lines, strings.Repeat("build ", len(h.Builder.Started())))
	s := m.Status.ModuleLoader
	lines = append(lines, fmt.Sprintf("matching=%d desired=%d available=%d", s.NodesMatchingSelectorNumber, s.DesiredNumber, s.AvailableNumber))
	return strings.Join(lines, "\n")
}

func podLoaderCluster(t *testing.T) *kmmtest.Harness {
	h := cluster(t)
	pl, err := loader.NewPodLoader(h.Clientset, "quay.io/kmmkit/kmm:test")
	require.NoError(t, err)
	_, err = h.RestartWith(kmm.WithNodeLoader(pl))
	require.NoError(t, err)
	return h
}

// TestCrashAtEveryStep cuts the first Reconcile pass at every API call in
// turn (later calls fail and the context is cancelled, as if the process
// died), restarts the Reconciler and settles. Every run must end in the
// same state as an uninterrupted one, with one build and no duplicate or
// leftover worker Pod.
func TestCrashAtEveryStep(t *testing.T) {
	ctx := context.Background()
	ref := podLoaderCluster(t)
	require.NoError(t, ref.CreateModule(ctx, nicModule()))
	settle(t, ref)
	want := outcome(t, ref)
	require.Contains(t, want, "n3 registry.example.com/nic:"+k57)

	for n := 1; ; n++ {
		h := podLoaderCluster(t)
		require.NoError(t, h.CreateModule(ctx, nicModule()))
		cctx, cancel := context.WithCancel(ctx)
		c := &crashAfter{n: n, cancel: cancel}
		h.Clientset.PrependReactor("*", "*", c.react)
		h.Dynamic.PrependReactor("*", "*", c.react)
		crashed := false
		for pass := 0; pass < 30 && !crashed; pass++ {
			res, err := h.Reconcile(cctx, "drivers", "nic")
			c.mu.Lock()
			crashed = c.seen >= c.n
			c.off = true // the kubelet is not the crashing process
			c.mu.Unlock()
			if crashed {
				break
			}
			require.NoError(t, err)
			pods := kubelet(t, h)
			c.mu.Lock()
			c.off = false
			c.mu.Unlock()
			if pods == 0 && (res.RequeueAfter == 0 || res.RequeueAfter.Minutes() >= 1) {
				break
			}
		}
		cancel()
		if !crashed {
			t.Logf("reaching the steady state takes %d API calls; the process was killed at each of them", n-1)
			break
		}
		_, err := h.Restart()
		require.NoError(t, err)
		settle(t, h)
		assert.Equal(t, want, outcome(t, h), "crash at call %d", n)
		pods, err := h.Clientset.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		assert.Empty(t, pods.Items, "crash at call %d: no worker Pod left", n)
		assert.Len(t, h.Builder.Started(), 1, "crash at call %d: one build", n)
	}
}
