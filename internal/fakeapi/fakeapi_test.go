package fakeapi_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kmmkit/kmmkit/internal/fakeapi"
)

func TestServer(t *testing.T) {
	ctx := context.Background()
	s, err := fakeapi.New(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	require.NoError(t, err)
	a, b := s.Client(), s.Client()
	n, err := a.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotEmpty(t, n.UID)
	assert.NotEmpty(t, n.ResourceVersion)

	p, err := a.CoreV1().Pods("ns").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.NotEmpty(t, p.UID)
	assert.False(t, p.CreationTimestamp.IsZero())
	_, err = b.CoreV1().Pods("ns").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, metav1.CreateOptions{})
	assert.True(t, apierrors.IsAlreadyExists(err), "%v", err)

	// Every write is a new resource version; a write on an old one conflicts.
	old := p.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	p2, err := b.CoreV1().Pods("ns").UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	assert.NotEqual(t, old.ResourceVersion, p2.ResourceVersion)
	assert.Equal(t, old.UID, p2.UID)
	_, err = a.CoreV1().Pods("ns").Update(ctx, old, metav1.UpdateOptions{})
	assert.True(t, apierrors.IsConflict(err), "%v", err)
	n2, err := a.CoreV1().Nodes().Patch(ctx, "n1", types.MergePatchType, []byte(`{"metadata":{"labels":{"a":"b"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	assert.NotEqual(t, n.ResourceVersion, n2.ResourceVersion)

	// Deletes honour their preconditions.
	other := types.UID("someone-else")
	err = a.CoreV1().Pods("ns").Delete(ctx, "p", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &other}})
	assert.True(t, apierrors.IsConflict(err), "%v", err)
	err = a.CoreV1().Pods("ns").Delete(ctx, "p", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID, ResourceVersion: &old.ResourceVersion}})
	assert.True(t, apierrors.IsConflict(err), "%v", err)
	require.NoError(t, a.CoreV1().Pods("ns").Delete(ctx, "p", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID, ResourceVersion: &p2.ResourceVersion}}))
	_, err = b.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err))

	// Each clientset records its own actions.
	assert.NotEqual(t, len(a.Actions()), len(b.Actions()))
}
