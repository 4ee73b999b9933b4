package cached_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kmmkit/kmmkit/controllerruntime/cached"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/crtest"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
)

// TestFromTheCache reads nodes, kmmkit's Pods, Secrets, ConfigMaps and
// Namespaces from a real manager's cache: the Pod cache holds only Pods
// with the identity's owner-name label, gets of missing objects are the
// API's NotFound (what kmmkit reports as a missing secret), and what the
// wrapper does not serve goes to the API server.
func TestFromTheCache(t *testing.T) {
	env := crtest.New(t)
	ctx := crtest.Context(t)
	ns := env.Namespace(t, "cache")
	nic := identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
	opts := env.Options(t, ns)
	opts.Cache.ByObject = cached.ByObject(nic)
	mgr, err := ctrl.NewManager(env.Config, opts)
	require.NoError(t, err)
	node := env.Run + "-node"
	env.ReadyNode(t, node, map[string]string{"run": env.Run}, "6.1.0-56-amd64", "boot-1")
	pod := func(name string, labels map[string]string) {
		_, err := env.Clientset.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pod("worker", nic.Owner(ns, "x").WorkerLabels("Load"))
	pod("kmm-worker", identity.Domain{}.Owner(ns, "x").WorkerLabels("Load"))
	pod("app", map[string]string{"app": "web"})
	_, err = env.Clientset.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pull"},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dTpw"}}}`)}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = env.Clientset.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dockerfile"},
		Data: map[string]string{"dockerfile": "FROM scratch"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	crtest.Start(t, mgr)

	nodes, err := cached.Nodes(mgr.GetCache())(ctx)
	require.NoError(t, err)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	assert.Contains(t, names, node)

	var pods []*corev1.Pod
	crtest.Eventually(t, "the Pod cache never held the worker", func(ctx context.Context) (bool, error) {
		pods, err = cached.Pods(mgr.GetCache())(ctx, ns, labels.Everything())
		return len(pods) > 0, err
	})
	require.Len(t, pods, 1, "only the NICDriver's Pods are cached")
	assert.Equal(t, "worker", pods[0].Name)
	sel, err := labels.Parse(nic.Owner(ns, "y").WorkerSelector())
	require.NoError(t, err)
	pods, err = cached.Pods(mgr.GetCache())(ctx, ns, sel)
	require.NoError(t, err)
	assert.Empty(t, pods, "another owner's selector")

	cs := cached.Clientset(env.Clientset, mgr.GetCache())
	var auth registry.AuthInfo
	crtest.Eventually(t, "the pull secret never came from the cache", func(ctx context.Context) (bool, error) {
		auth, err = pullsecret.Keychain(ctx, cs, ns, "pull")
		return err == nil, nil
	})
	assert.Equal(t, []string{ns + "/pull"}, auth.Secrets)
	_, err = pullsecret.Keychain(ctx, cs, ns, "missing")
	assert.ErrorContains(t, err, "pull secret "+ns+"/missing")
	assert.ErrorContains(t, err, "the pull secret does not exist")
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "dockerfile", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "FROM scratch", cm.Data["dockerfile"])
	_, err = cs.CoreV1().ConfigMaps(ns).Get(ctx, "missing", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "%v", err)
	got, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, ns, got.Name)
	// Everything else is the API server's.
	created, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "new"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.NotEmpty(t, created.UID)
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, list.Items, 3, "Pods are listed from the API server, not the filtered cache")
}
