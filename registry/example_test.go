package registry_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

func ExampleClient_Check() {
	// A registry for the example; yours is reached the same way.
	srv := httptest.NewServer(ggcrregistry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	insecure := v1beta1.TLSOptions{Insecure: true} // the Module's registryTLS

	client, err := registry.NewClient()
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	img, _ := random.Image(64, 1)
	if _, err := client.Push(ctx, registry.Request{Image: host + "/drivers/nic:6.1.0-56-amd64", TLS: insecure}, img); err != nil {
		panic(err)
	}
	for _, tag := range []string{"6.1.0-56-amd64", "6.8.0-1"} {
		res, err := client.Check(ctx, registry.Request{Image: host + "/drivers/nic:" + tag, TLS: insecure})
		switch {
		case registry.IsUnauthorized(err):
			fmt.Println(tag, "fix the pull secret:", err)
		case err != nil:
			fmt.Println(tag, "registry problem:", err)
		case res.Exists:
			fmt.Println(tag, "exists:", strings.HasPrefix(res.Digest, "sha256:"))
		default:
			fmt.Println(tag, "missing: build it")
		}
	}
	// Output:
	// 6.1.0-56-amd64 exists: true
	// 6.8.0-1 missing: build it
}
