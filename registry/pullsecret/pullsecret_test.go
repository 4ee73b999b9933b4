package pullsecret_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
)

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

func dockerConfigJSON(ns, name, host, user, pass string) *corev1.Secret {
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, basicAuth(user, pass))
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)}}
}

// resolve returns "user:password" the keychain gives for ref, "" for
// anonymous.
func resolve(t *testing.T, info registry.AuthInfo, ref string) string {
	t.Helper()
	r, err := registry.ParseReference(ref, v1beta1.TLSOptions{})
	require.NoError(t, err)
	auth, err := info.Keychain.Resolve(r.Context())
	require.NoError(t, err)
	cfg, err := auth.Authorization()
	require.NoError(t, err)
	if cfg.Username == "" {
		return ""
	}
	return cfg.Username + ":" + cfg.Password
}

func TestKeychain(t *testing.T) {
	cfgJSON := `{"auths":{"https://registry.example.com/v1/":{"username":"u","password":"p"},"registry.example.com/team":{"auth":"` +
		basicAuth("team", "tp") + `"}}}`
	cfgLegacy := `{"legacy.example.com":{"auth":"` + basicAuth("l", "lp") + `"},"registry.example.com":{"auth":"` + basicAuth("later", "x") + `"}}`
	client := k8sfake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "json", Namespace: "ns"}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfgJSON)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "ns"}, Type: corev1.SecretTypeDockercfg,
			Data: map[string][]byte{corev1.DockerConfigKey: []byte(cfgLegacy)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "opaque", Namespace: "ns"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"token": []byte("x")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: "ns"}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte("{")}},
	)
	ctx := context.Background()
	info, err := pullsecret.Keychain(ctx, client, "ns", "json", "legacy")
	require.NoError(t, err)
	assert.Equal(t, []string{"ns/json", "ns/legacy"}, info.Secrets)
	for ref, want := range map[string]string{
		"registry.example.com/other/img:v1": "u:p", // the first secret wins
		"registry.example.com/team/img:v1":  "team:tp",
		"legacy.example.com/img:v1":         "l:lp",
		"unknown.example.com/img:v1":        "",
	} {
		assert.Equal(t, want, resolve(t, info, ref), ref)
	}

	_, err = pullsecret.Keychain(ctx, client, "ns", "missing")
	require.True(t, registry.IsUnauthorized(err))
	assert.Contains(t, err.Error(), "pull secret ns/missing")
	assert.Contains(t, err.Error(), "does not exist")
	_, err = pullsecret.Keychain(ctx, client, "ns", "opaque")
	assert.EqualError(t, err, `pull secret ns/opaque has type "Opaque" and no .dockerconfigjson or .dockercfg key: it must be of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg`)
	info, err = pullsecret.Keychain(ctx, client, "ns", "json", "broken")
	assert.ErrorContains(t, err, "pull secret ns/broken: not a Docker config")
	assert.Equal(t, []string{"ns/json", "ns/broken"}, info.Secrets, "the secrets read are named on an error too")
}

// TestKeychainKeyedByContent: reading the same secret again, or the same
// credentials in another namespace, gives the same Key; other
// credentials another; the Key never shows them.
func TestKeychainKeyedByContent(t *testing.T) {
	client := k8sfake.NewClientset(
		dockerConfigJSON("ns", "pull", "r.example.com", "alice", "s3cret"),
		dockerConfigJSON("other", "pull", "r.example.com", "alice", "s3cret"),
		dockerConfigJSON("ns", "wrong", "r.example.com", "alice", "wrong"))
	ctx := context.Background()
	first, err := pullsecret.Keychain(ctx, client, "ns", "pull")
	require.NoError(t, err)
	require.NotEmpty(t, first.Key)
	assert.NotContains(t, first.Key, "s3cret")
	assert.NotContains(t, first.Key, basicAuth("alice", "s3cret"))
	again, err := pullsecret.Keychain(ctx, client, "ns", "pull")
	require.NoError(t, err)
	assert.Equal(t, first.Key, again.Key)
	same, err := pullsecret.Keychain(ctx, client, "other", "pull")
	require.NoError(t, err)
	assert.Equal(t, first.Key, same.Key, "identical credentials in another namespace")
	wrong, err := pullsecret.Keychain(ctx, client, "ns", "wrong")
	require.NoError(t, err)
	assert.NotEqual(t, first.Key, wrong.Key)
	both, err := pullsecret.Keychain(ctx, client, "ns", "pull", "wrong")
	require.NoError(t, err)
	assert.NotEqual(t, first.Key, both.Key)
	assert.Equal(t, "alice:s3cret", resolve(t, both, "r.example.com/x:v1"))
}

// TestRealRegistryTLSAuth checks the TLS + htpasswd registry with
// credentials read from pull secrets stored in the test kube-apiserver;
// reading the secret again on the next pass still hits the cache.
func TestRealRegistryTLSAuth(t *testing.T) {
	regs := testenv.Registry(t)
	cs, err := kubernetes.NewForConfig(testenv.RESTConfig(t))
	require.NoError(t, err)
	ctx := context.Background()
	ns := fmt.Sprintf("kmmkit-reg-%d", rand.Uint32())
	testenv.Namespace(t, cs, ns)
	for name, pass := range map[string]string{"good": regs.Password, "bad": "wrong-password"} {
		_, err := cs.CoreV1().Secrets(ns).Create(ctx, dockerConfigJSON(ns, name, regs.TLS, regs.User, pass), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	ca, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	c, err := registry.NewClient(registry.WithCABundle(ca))
	require.NoError(t, err)

	good, err := pullsecret.Keychain(ctx, cs, ns, "good")
	require.NoError(t, err)
	img := fmt.Sprintf("%s/kmmkit-%d/mod:v1", regs.TLS, rand.Uint32())
	pushed, err := random.Image(64, 1)
	require.NoError(t, err)
	digest, err := c.Push(ctx, registry.Request{Image: img, Auth: good}, pushed)
	require.NoError(t, err)
	for pass := range 2 {
		auth, err := pullsecret.Keychain(ctx, cs, ns, "good")
		require.NoError(t, err)
		res, err := c.Check(ctx, registry.Request{Image: img, Auth: auth})
		require.NoError(t, err)
		assert.Equal(t, digest, res.Digest)
		assert.Equal(t, pass > 0, res.Cached, "pass %d", pass)
	}

	bad, err := pullsecret.Keychain(ctx, cs, ns, "bad")
	require.NoError(t, err)
	_, err = c.Check(ctx, registry.Request{Image: img, Auth: bad})
	require.True(t, registry.IsUnauthorized(err), "%v", err)
	assert.Contains(t, err.Error(), "used pull secret "+ns+"/bad")

	_, err = c.Check(ctx, registry.Request{Image: img})
	require.True(t, registry.IsUnauthorized(err), "%v", err)
	assert.Contains(t, err.Error(), "no pull secret was given")

	_, err = pullsecret.Keychain(ctx, cs, ns, "absent")
	require.True(t, registry.IsUnauthorized(err))
	assert.Contains(t, err.Error(), "pull secret "+ns+"/absent")

	untrusting, err := registry.NewClient()
	require.NoError(t, err)
	_, err = untrusting.Check(ctx, registry.Request{Image: img, Auth: good})
	require.True(t, registry.IsTLS(err), "untrusted CA: %v", err)
	res, err := untrusting.Check(ctx, registry.Request{Image: img, Auth: good, TLS: v1beta1.TLSOptions{InsecureSkipTLSVerify: true}})
	require.NoError(t, err)
	assert.Equal(t, digest, res.Digest)
}
