package registry

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"
)

func pullSecret(ns, name, host, user, pass string) *corev1.Secret {
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)}}
}

// TestCacheKeyedByCredentialContent: a keychain rebuilt from the same
// pull secret on every pass hits the cache and the puller pool; other
// credentials do not share its answers.
func TestCacheKeyedByCredentialContent(t *testing.T) {
	reg := newTestRegistry(t, true, "alice", "s3cret")
	reg.push(t, "kmm/private:v1", false)
	client := k8sfake.NewClientset(
		pullSecret("ns", "pull", reg.host, "alice", "s3cret"),
		pullSecret("other", "pull", reg.host, "alice", "s3cret"),
		pullSecret("ns", "wrong", reg.host, "alice", "wrong"))
	c := newChecker(t, WithCABundle(reg.caPEM()))
	ctx := context.Background()
	img := reg.host + "/kmm/private:v1"

	var first AuthInfo
	for pass := range 5 {
		auth, err := SecretKeychain(ctx, client, "ns", "pull")
		require.NoError(t, err)
		require.NotEmpty(t, auth.Key)
		assert.NotContains(t, auth.Key, "s3cret")
		if pass == 0 {
			first = auth
		}
		assert.Equal(t, first.Key, auth.Key, "same secret, same key")
		res, err := c.Check(ctx, Request{Image: img, Auth: auth})
		require.NoError(t, err)
		assert.True(t, res.Exists)
		assert.Equal(t, pass > 0, res.Cached, "pass %d", pass)
	}
	assert.Len(t, c.pullers, 1)
	assert.Len(t, c.cache, 1)

	same, err := SecretKeychain(ctx, client, "other", "pull")
	require.NoError(t, err)
	assert.Equal(t, first.Key, same.Key, "identical credentials in another namespace")
	wrong, err := SecretKeychain(ctx, client, "ns", "wrong")
	require.NoError(t, err)
	assert.NotEqual(t, first.Key, wrong.Key)
	_, err = c.Check(ctx, Request{Image: img, Auth: wrong})
	assert.True(t, IsUnauthorized(err), "other credentials never get the cached answer: %v", err)

	// DockerConfigKeychain's keychains are keyed by content too.
	kc1 := basicKeychain(t, reg.host, "alice", "s3cret")
	kc2 := basicKeychain(t, reg.host, "alice", "s3cret")
	k1, _, _ := Request{Auth: kc1}.connKey()
	k2, _, _ := Request{Auth: kc2}.connKey()
	assert.Equal(t, k1, k2)
}

// valueKeychain is a keychain that is not a pointer: it cannot be told
// apart safely, so nothing is cached for it.
type valueKeychain struct{ user, pass string }

func (k valueKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

type pointerKeychain struct{ valueKeychain }

func TestCacheWithKeylessKeychains(t *testing.T) {
	reg := newTestRegistry(t, true, "alice", "s3cret")
	reg.push(t, "kmm/private:v1", false)
	c := newChecker(t, WithCABundle(reg.caPEM()))
	ctx := context.Background()
	img := reg.host + "/kmm/private:v1"

	for range 3 {
		res, err := c.Check(ctx, Request{Image: img, Auth: AuthInfo{Keychain: valueKeychain{"alice", "s3cret"}}})
		require.NoError(t, err)
		assert.False(t, res.Cached)
	}
	assert.Empty(t, c.cache)
	assert.Empty(t, c.pullers)

	kc := &pointerKeychain{valueKeychain{"alice", "s3cret"}}
	for i := range 3 {
		res, err := c.Check(ctx, Request{Image: img, Auth: AuthInfo{Keychain: kc}})
		require.NoError(t, err)
		assert.Equal(t, i > 0, res.Cached, "the same keychain object")
	}
	res, err := c.Check(ctx, Request{Image: img, Auth: AuthInfo{Keychain: &pointerKeychain{valueKeychain{"alice", "s3cret"}}}})
	require.NoError(t, err)
	assert.False(t, res.Cached, "another keychain object is asked for")
}

func TestEvictBounds(t *testing.T) {
	m := map[string]int{}
	for i := range 1000 {
		evict(m, 64, func(v int) bool { return v%2 == 0 })
		m[fmt.Sprint(i)] = i
		require.LessOrEqual(t, len(m), 64)
	}
	assert.Greater(t, len(m), 32, "evicting does not wipe the map")
}
