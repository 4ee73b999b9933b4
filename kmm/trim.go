package kmm

import (
	corev1 "k8s.io/api/core/v1"
)

// TrimNode drops from a Node what kmmkit never reads, for an informer
// cache that serves kmmkit only: a cache.TransformFunc for client-go's
// informers.WithTransform or controller-runtime's cache.ByObject
// Transform. It keeps the metadata (without managedFields), the taints
// and unschedulable flag, the conditions and the node info (kernel, boot
// ID, OS); it drops the images list, addresses, capacity and the rest of
// the status, which on a real node are most of its bytes. Objects that
// are not Nodes pass as they are. A cache that other readers share must
// not be trimmed.
func TrimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	n.ManagedFields = nil
	n.Spec = corev1.NodeSpec{Taints: n.Spec.Taints, Unschedulable: n.Spec.Unschedulable}
	n.Status = corev1.NodeStatus{Conditions: n.Status.Conditions, NodeInfo: n.Status.NodeInfo}
	return n, nil
}

// TrimPod drops from a Pod what kmmkit never reads of its worker, build
// and device-plugin Pods, for an informer cache of those Pods only (see
// controllerruntime/cached.ByObject): a cache.TransformFunc like
// TrimNode. It keeps the metadata (without managedFields), the node,
// service account and pull secrets of the spec, and the whole status; it
// drops the containers, volumes and the rest of the spec. Objects that
// are not Pods pass as they are.
func TrimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	p.ManagedFields = nil
	p.Spec = corev1.PodSpec{NodeName: p.Spec.NodeName, ServiceAccountName: p.Spec.ServiceAccountName,
		ImagePullSecrets: p.Spec.ImagePullSecrets}
	return p, nil
}
