package kmm_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/loader"
)

// TestWithWorkerPods: the Reconciler builds the PodLoader itself on its
// clientset, gives it its logger and event recorder, and applies the
// loader options (here a registry CA) to the worker Pods; it replaces the
// harness's fake loader, which sees nothing.
func TestWithWorkerPods(t *testing.T) {
	ctx := context.Background()
	h := cluster(t)
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(_, args string) { mu.Lock(); lines = append(lines, args); mu.Unlock() }, funcr.Options{})
	_, err := h.RestartWith(kmm.WithLogger(log),
		kmm.WithWorkerPods("quay.io/kmmkit/kmm:test", loader.WithCABundleConfigMap("registry-ca", "")))
	require.NoError(t, err)
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)

	pods, err := h.Clientset.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, pods.Items, "the Reconciler's PodLoader runs worker Pods")
	for _, p := range pods.Items {
		c := p.Spec.Containers[0]
		assert.Equal(t, "quay.io/kmmkit/kmm:test", c.Image, p.Name)
		assert.Contains(t, strings.Join(c.Args, " "), "--ca-file "+loader.WorkerCADir+"/ca-bundle.crt", p.Name)
		assert.True(t, slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool {
			return v.Name == "registry-ca" && v.ConfigMap != nil && v.ConfigMap.Name == "registry-ca"
		}), p.Name)
	}
	mu.Lock()
	created := slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `"msg"="created worker pod"`) })
	mu.Unlock()
	assert.True(t, created, "the PodLoader logs to the Reconciler's logger: %v", lines)

	settle(t, h)
	var loaded int
	for _, e := range h.Events() {
		if strings.HasPrefix(e, "Normal ModuleLoaded ") {
			loaded++
		}
	}
	assert.Equal(t, 3, loaded, "the PodLoader records on the Reconciler's recorder, once per node: %v", h.Events())
	assert.Empty(t, h.Loader.History(), "the fake loader was replaced")
}

// TestWithWorkerPodsRefused: NewReconciler reports what the PodLoader
// refuses, naming both options, and the options it cannot use itself; the
// last of WithWorkerPods and WithNodeLoader wins.
func TestWithWorkerPodsRefused(t *testing.T) {
	h := cluster(t)
	_, err := kmm.NewReconciler(h.Clientset, kmm.WithWorkerPods("quay.io/kmmkit/kmm:test", loader.WithWorkerBinary("kmm")))
	assert.EqualError(t, err, `kmm: WithWorkerPods: pod loader: WithWorkerBinary("kmm"): the path must be absolute`)
	_, err = kmm.NewReconciler(h.Clientset, kmm.WithWorkerPods(""))
	assert.ErrorContains(t, err, "kmm: WithWorkerPods: pod loader: no worker image")
	_, err = kmm.NewReconciler(h.Clientset)
	assert.ErrorContains(t, err, "kmm: no node loader: pass WithWorkerPods(workerImage)")
	_, err = kmm.NewReconciler(h.Clientset, kmm.WithNodeLoader(h.Loader), kmm.WithVerifyInterval(0))
	assert.EqualError(t, err, "kmm: WithVerifyInterval(0s): the interval must be positive")
	_, err = kmm.NewReconciler(h.Clientset, kmm.WithNodeLoader(h.Loader), kmm.WithClock(nil))
	assert.EqualError(t, err, "kmm: WithClock(nil): no clock")
	// A loader of one's own after WithWorkerPods: its bad image is never
	// built into a PodLoader.
	_, err = kmm.NewReconciler(h.Clientset, kmm.WithWorkerPods(""), kmm.WithNodeLoader(h.Loader))
	assert.NoError(t, err)
}
