package kmm_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// TestUntolerated lists exactly the taints that keep a node from being
// targeted: NoSchedule and NoExecute ones the spec does not tolerate,
// with KMM's pressure tolerations always on.
func TestUntolerated(t *testing.T) {
	gpu := corev1.Taint{Key: "example.com/gpu", Effect: corev1.TaintEffectNoSchedule}
	cordon := corev1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}
	pressure := corev1.Taint{Key: "node.kubernetes.io/memory-pressure", Effect: corev1.TaintEffectNoSchedule}
	prefer := corev1.Taint{Key: "example.com/slow", Effect: corev1.TaintEffectPreferNoSchedule}
	gone := corev1.Taint{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute}
	node := &corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{gpu, cordon, pressure, prefer, gone}}}

	assert.Equal(t, []corev1.Taint{gpu, cordon, gone}, kmm.Untolerated(&v1beta1.ModuleSpec{}, node))
	spec := &v1beta1.ModuleSpec{Tolerations: []corev1.Toleration{
		{Key: "example.com/gpu", Operator: corev1.TolerationOpExists},
		{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	}}
	assert.Equal(t, []corev1.Taint{cordon}, kmm.Untolerated(spec, node))
	assert.Empty(t, kmm.Untolerated(spec, &corev1.Node{}))
}
