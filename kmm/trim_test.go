package kmm_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm"
)

// TestTrimNodeKeepsWhatKmmkitReads: of a Node as a kubelet reports it,
// TrimNode keeps the metadata but managedFields, taints, unschedulable,
// conditions and node info, and drops the rest.
func TestTrimNodeKeepsWhatKmmkitReads(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "node-1", UID: "u1", ResourceVersion: "7", Labels: map[string]string{"a": "b"},
		Annotations: map[string]string{"loaded.kmmkit.io/drivers.nic": "{}"}}
	taints := []corev1.Taint{{Key: "gpu", Effect: corev1.TaintEffectNoExecute}}
	conds := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	info := corev1.NodeSystemInfo{KernelVersion: "6.1.0-26-amd64", BootID: "b1", OSImage: "Debian GNU/Linux 12"}
	full := &corev1.Node{ObjectMeta: *meta.DeepCopy(),
		Spec: corev1.NodeSpec{PodCIDR: "10.0.0.0/24", ProviderID: "aws:///i-1", Taints: taints, Unschedulable: true},
		Status: corev1.NodeStatus{Conditions: conds, NodeInfo: info,
			Capacity:  corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
			Images:    []corev1.ContainerImage{{Names: []string{"registry.example.com/nic@sha256:0123"}, SizeBytes: 1 << 20}}}}
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	got, err := kmm.TrimNode(full)
	require.NoError(t, err)
	want := &corev1.Node{ObjectMeta: meta, Spec: corev1.NodeSpec{Taints: taints, Unschedulable: true},
		Status: corev1.NodeStatus{Conditions: conds, NodeInfo: info}}
	assert.Equal(t, want, got)

	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
	same, err := kmm.TrimNode(other)
	require.NoError(t, err)
	assert.Same(t, other, same)
}

// TestTrimPodKeepsWhatKmmkitReads: of a worker Pod, TrimPod keeps the
// metadata but managedFields, the spec's node, service account and pull
// secrets, and the status.
func TestTrimPodKeepsWhatKmmkitReads(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "kmm-worker-node-1-nic", Namespace: "drivers", UID: "u1",
		Labels: map[string]string{"kmm.node.kubernetes.io/worker-action": "Load"}, Annotations: map[string]string{"kmm.node.kubernetes.io/worker-config": "x"}}
	status := corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "worker", RestartCount: 2}}}
	secrets := []corev1.LocalObjectReference{{Name: "pull"}}
	full := &corev1.Pod{ObjectMeta: *meta.DeepCopy(), Status: status,
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "kmm-worker", ImagePullSecrets: secrets,
			Containers: []corev1.Container{{Name: "worker", Image: "quay.io/kmmkit/kmm:v0.1", Args: []string{"worker", "load"}}},
			Volumes:    []corev1.Volume{{Name: "config"}}, Tolerations: []corev1.Toleration{{Key: "gpu"}}}}
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kmm"}}
	got, err := kmm.TrimPod(full)
	require.NoError(t, err)
	want := &corev1.Pod{ObjectMeta: meta, Status: status,
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "kmm-worker", ImagePullSecrets: secrets}}
	assert.Equal(t, want, got)
}
