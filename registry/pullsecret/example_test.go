package pullsecret_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
)

// Read a Module's imageRepoSecret and check its image with it.
func ExampleKeychain() {
	clientset := k8sfake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "drivers", Name: "pull"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"quay.io":{"username":"robot","password":"token"}}}`)},
	})
	auth, err := pullsecret.Keychain(context.Background(), clientset, "drivers", "pull")
	if err != nil {
		fmt.Println(err)
		return
	}
	req := registry.Request{Image: "quay.io/acme/nic-kmod:6.1.0-57-amd64", Auth: auth}
	fmt.Println(req.Auth.Secrets)
	// Output: [drivers/pull]
}
