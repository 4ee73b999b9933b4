package registry

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// dockerConfig is a config.json with Basic credentials for host.
func dockerConfig(host, user, pass string) []byte {
	return fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
}

// TestCacheKeyedByCredentialContent: a keychain rebuilt from the same
// credentials on every pass (as a Reconciler reads its pull secret on
// every pass) hits the cache and the puller pool; other credentials do
// not share its answers.
func TestCacheKeyedByCredentialContent(t *testing.T) {
	reg := newTestRegistry(t, true, "alice", "s3cret")
	reg.push(t, "kmm/private:v1", false)
	c := newChecker(t, WithCABundle(reg.caPEM()))
	ctx := context.Background()
	img := reg.host + "/kmm/private:v1"

	var first string
	for pass := range 5 {
		kc, err := DockerConfigKeychain(dockerConfig(reg.host, "alice", "s3cret"))
		require.NoError(t, err)
		key := kc.Key()
		require.NotEmpty(t, key)
		assert.NotContains(t, key, "s3cret")
		if pass == 0 {
			first = key
		}
		assert.Equal(t, first, key, "same credentials, same key")
		res, err := c.Check(ctx, Request{Image: img, Auth: AuthInfo{Keychain: kc}})
		require.NoError(t, err)
		assert.True(t, res.Exists)
		assert.Equal(t, pass > 0, res.Cached, "pass %d", pass)
	}
	assert.Len(t, c.pullers, 1)
	assert.Len(t, c.cache, 1)

	wrong, err := DockerConfigKeychain(dockerConfig(reg.host, "alice", "wrong"))
	require.NoError(t, err)
	assert.NotEqual(t, first, wrong.Key())
	_, err = c.Check(ctx, Request{Image: img, Auth: AuthInfo{Keychain: wrong}})
	assert.True(t, IsUnauthorized(err), "other credentials never get the cached answer: %v", err)

	// An explicit AuthInfo.Key wins over the keychain's.
	k1, _, _ := Request{Auth: basicKeychain(t, reg.host, "alice", "s3cret")}.connKey()
	k2, _, _ := Request{Auth: basicKeychain(t, reg.host, "alice", "s3cret")}.connKey()
	assert.Equal(t, k1, k2)
}

// TestDockerConfigKeychainDocuments merges documents as pull secrets are
// merged: for the same key the first document wins, a longer key wins
// whichever document holds it, and an error names the document.
func TestDockerConfigKeychainDocuments(t *testing.T) {
	team := fmt.Appendf(nil, `{"auths":{"registry.example.com/team":{"username":"team","password":"tp"}}}`)
	kc, err := DockerConfigKeychain(dockerConfig("registry.example.com", "first", "1"), dockerConfig("https://registry.example.com/v1/", "second", "2"), team)
	require.NoError(t, err)
	for ref, want := range map[string]string{
		"registry.example.com/other/img:v1": "first:1",
		"registry.example.com/team/img:v1":  "team:tp",
	} {
		r, err := ParseReference(ref, v1beta1.TLSOptions{})
		require.NoError(t, err)
		auth, err := kc.Resolve(r.Context())
		require.NoError(t, err)
		cfg, err := auth.Authorization()
		require.NoError(t, err)
		assert.Equal(t, want, cfg.Username+":"+cfg.Password, ref)
	}
	one, err := DockerConfigKeychain(team)
	require.NoError(t, err)
	assert.NotEqual(t, one.Key(), kc.Key())

	_, err = DockerConfigKeychain(team, []byte("{"))
	assert.ErrorContains(t, err, "document 2: not a Docker config")
	_, err = DockerConfigKeychain([]byte(`{"auths":{"h":{"auth":"%%"}}}`))
	assert.EqualError(t, err, `entry "h": auth is not base64: illegal base64 data at input byte 0`)
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
