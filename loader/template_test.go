package loader

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// TestWaitingWorkerKeepsItsTemplate: a worker Pod that has not started is
// compared with the template the loader remembers for its request, so
// passes that find it waiting build no template; a new request (another
// image) is not served from memory and replaces the Pod.
func TestWaitingWorkerKeepsItsTemplate(t *testing.T) {
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u1"}}
	node.Status.NodeInfo.KernelVersion, node.Status.NodeInfo.BootID = "6.1.0-26-amd64", "b1"
	cs := k8sfake.NewClientset(node)
	l, err := NewPodLoader(cs, "quay.io/kmmkit/kmm:v0.1")
	require.NoError(t, err)
	want := &PodRequest{Config: v1beta1.ModuleConfig{KernelVersion: "6.1.0-26-amd64", ContainerImage: "registry.example.com/nic:1",
		Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic"}}}
	req := SyncRequest{Namespace: "drivers", Module: "nic", Nodes: []*corev1.Node{node}, Desired: map[string]*PodRequest{"n1": want}}
	_, err = l.Sync(ctx, req)
	require.NoError(t, err)
	pods, err := cs.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	pod := pods.Items[0]

	owner := kmmOwner("drivers", "nic")
	key, err := templateKey(ActionLoad, *want)
	require.NoError(t, err)
	hash, ok := l.mem.template(owner, pod.Name, key)
	require.True(t, ok, "the created worker's template is not remembered")
	assert.Equal(t, pod.Annotations[AnnotationWorkerHash], hash)

	states, err := l.Sync(ctx, req)
	require.NoError(t, err)
	require.Len(t, states, 1)
	assert.Equal(t, "worker pod "+pod.Name+" is loading the module", states[0].Condition.Message)
	// The pass compared the Pod with the remembered hash, not a new
	// template: with another hash remembered, it would replace the Pod.
	l.mem.setTemplate(owner, pod.Name, key, "remembered")
	states, err = l.Sync(ctx, req)
	require.NoError(t, err)
	require.Len(t, states, 1)
	assert.Equal(t, "replacing worker pod "+pod.Name+": the module's config changed", states[0].Condition.Message)
	_, err = l.Sync(ctx, req) // creates it again
	require.NoError(t, err)
	pods, err = cs.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	pod = pods.Items[0]

	next := *want
	next.Config.ContainerImage = "registry.example.com/nic:2"
	req.Desired = map[string]*PodRequest{"n1": &next}
	states, err = l.Sync(ctx, req)
	require.NoError(t, err)
	require.Len(t, states, 1)
	assert.Equal(t, "replacing worker pod "+pod.Name+": the module's config changed", states[0].Condition.Message)
	pods, err = cs.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, pods.Items, "the outdated waiting worker was not deleted")
	_, ok = l.mem.template(owner, pod.Name, key)
	assert.False(t, ok, "the deleted worker's template is still remembered")
}
