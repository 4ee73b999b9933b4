package kmm_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
)

// TestStatusRealRegistry: the status scenarios of a refused credential,
// a TLS failure and an unreachable registry, with the real registry
// client against the real docker-registry servers (plain, and TLS with
// htpasswd). n1 and n2's kernel maps to an image on the plain registry,
// n3's to one on the TLS registry or an unreachable one.
func TestStatusRealRegistry(t *testing.T) {
	regs := testenv.Registry(t)
	ctx := context.Background()
	ca, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	run := fmt.Sprintf("st%d", rand.Uint32()%100000)
	plain := regs.Plain + "/" + run + "/nic:" + k56
	secure := regs.TLS + "/" + run + "/nic:" + k57
	img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: k56,
		Modules: []assemble.File{{Path: "extra/nic_drv.ko", Data: elftest.Module{}.Bytes()}}})
	require.NoError(t, err)
	trusting, err := registry.NewClient(registry.WithCABundle(ca))
	require.NoError(t, err)
	_, err = trusting.Push(ctx, registry.Request{Image: plain, TLS: v1beta1.TLSOptions{Insecure: true}}, img)
	require.NoError(t, err)

	secret := func(password string) *corev1.Secret {
		auth := base64.StdEncoding.EncodeToString([]byte(regs.User + ":" + password))
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: "drivers"}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, regs.TLS, auth)}}
	}
	module := func(image string, tls v1beta1.TLSOptions) *v1beta1.Module {
		m := nicModule()
		m.Spec.ImageRepoSecret = &corev1.LocalObjectReference{Name: "pull"}
		m.Spec.ModuleLoader.Container.KernelMappings = []v1beta1.KernelMapping{
			{Literal: k56, ContainerImage: plain, RegistryTLS: &v1beta1.TLSOptions{Insecure: true}},
			{Literal: k57, ContainerImage: image, RegistryTLS: &tls},
		}
		return m
	}

	t.Run("Unauthorized", func(t *testing.T) {
		h := cluster(t, kmm.WithImageChecker(trusting))
		_, err := h.Clientset.CoreV1().Secrets("drivers").Create(ctx, secret(regs.Password), metav1.CreateOptions{})
		require.NoError(t, err)
		auth, err := pullsecret.Keychain(ctx, h.Clientset, "drivers", "pull")
		require.NoError(t, err)
		_, err = trusting.Push(ctx, registry.Request{Image: secure, Auth: auth}, img)
		require.NoError(t, err)
		_, err = h.Clientset.CoreV1().Secrets("drivers").Update(ctx, secret("wrong"), metav1.UpdateOptions{})
		require.NoError(t, err)
		require.NoError(t, h.CreateModule(ctx, module(secure, v1beta1.TLSOptions{})))
		m := settled(t, h)
		assertN3Fails(t, m, reason.Unauthorized, v1beta1.KernelStateCheckFailed, secure+": Unauthorized")
		assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionTrue, reason.Unauthorized, "drivers/pull")

		// The right password: n3 gets its driver.
		_, err = h.Clientset.CoreV1().Secrets("drivers").Update(ctx, secret(regs.Password), metav1.UpdateOptions{})
		require.NoError(t, err)
		m = settled(t, h)
		require.Equal(t, &v1beta1.DaemonSetStatus{NodesMatchingSelectorNumber: 3, DesiredNumber: 3, AvailableNumber: 3}, m.Status.ModuleLoader)
		assertCond(t, m, kmm.ConditionDegraded, metav1.ConditionFalse, reason.AsExpected)
	})

	t.Run("TLSError", func(t *testing.T) {
		untrusting, err := registry.NewClient() // no CA bundle
		require.NoError(t, err)
		h := cluster(t, kmm.WithImageChecker(untrusting))
		_, err = h.Clientset.CoreV1().Secrets("drivers").Create(ctx, secret(regs.Password), metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, h.CreateModule(ctx, module(secure, v1beta1.TLSOptions{})))
		m := settled(t, h)
		assertN3Fails(t, m, reason.TLSError, v1beta1.KernelStateCheckFailed, secure+": TLSError")
	})

	t.Run("RegistryUnavailable", func(t *testing.T) {
		once, err := registry.NewClient(registry.WithRetryPolicy(registry.RetryPolicy{Attempts: 1}))
		require.NoError(t, err)
		h := cluster(t, kmm.WithImageChecker(once))
		_, err = h.Clientset.CoreV1().Secrets("drivers").Create(ctx, secret(regs.Password), metav1.CreateOptions{})
		require.NoError(t, err)
		gone := "127.0.0.1:1/" + run + "/nic:" + k57 // nothing listens on port 1
		require.NoError(t, h.CreateModule(ctx, module(gone, v1beta1.TLSOptions{Insecure: true})))
		m := settled(t, h)
		assertN3Fails(t, m, reason.RegistryUnavailable, v1beta1.KernelStateCheckFailed, gone+": RegistryUnavailable")
	})
}
