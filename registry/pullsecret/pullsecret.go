// Package pullsecret reads Kubernetes image pull secrets into the
// credentials of a registry request ([registry.AuthInfo]), with
// client-go. It is the cluster side of package registry: registry itself
// (checks, pulls, extraction, pushes) needs no Kubernetes client, so the
// node-side worker links it without client-go.
package pullsecret

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/registry"
)

// Keychain reads the pull secrets names of namespace:
// kubernetes.io/dockerconfigjson (key .dockerconfigjson) and the legacy
// kubernetes.io/dockercfg (key .dockercfg), merged as
// registry.DockerConfigKeychain merges documents (the first secret wins
// for the same registry). A missing secret is an error of reason
// Unauthorized naming it; a secret of another type or that does not parse
// is an error naming it. AuthInfo.Secrets names every secret read, also
// on an error; AuthInfo.Key is a hash of their content, so a Reconciler
// that reads the secrets on every pass still hits the Client's cache.
func Keychain(ctx context.Context, client kubernetes.Interface, namespace string, names ...string) (registry.AuthInfo, error) {
	var info registry.AuthInfo
	docs := make([][]byte, 0, len(names))
	for _, name := range names {
		id := namespace + "/" + name
		info.Secrets = append(info.Secrets, id)
		s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return info, &registry.Error{Reason: registry.ReasonUnauthorized, Image: "pull secret " + id, Detail: "the pull secret does not exist", Err: err}
		}
		if err != nil {
			return info, fmt.Errorf("reading pull secret %s: %w", id, err)
		}
		var data []byte
		switch {
		case s.Type == corev1.SecretTypeDockerConfigJson || s.Data[corev1.DockerConfigJsonKey] != nil:
			data = s.Data[corev1.DockerConfigJsonKey]
		case s.Type == corev1.SecretTypeDockercfg || s.Data[corev1.DockerConfigKey] != nil:
			data = s.Data[corev1.DockerConfigKey]
		default:
			return info, fmt.Errorf("pull secret %s has type %q and no %s or %s key: it must be of type %s or %s", id, s.Type,
				corev1.DockerConfigJsonKey, corev1.DockerConfigKey, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg)
		}
		// Each secret on its own first, so an error names it.
		if _, err := registry.DockerConfigKeychain(data); err != nil {
			return info, fmt.Errorf("pull secret %s: %w", id, err)
		}
		docs = append(docs, data)
	}
	kc, err := registry.DockerConfigKeychain(docs...)
	if err != nil {
		return info, err
	}
	info.Keychain, info.Key = kc, kc.Key()
	return info, nil
}
