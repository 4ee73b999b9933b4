package fake_test

import (
	"context"
	"fmt"

	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/fake"
)

func Example() {
	checker := fake.New()
	checker.SetExists("quay.io/acme/nic:6.1.0-56-amd64", "sha256:aaaa")
	checker.SetError("quay.io/acme/nic:6.8.0-1", &registry.Error{Reason: registry.ReasonUnauthorized, Image: "quay.io/acme/nic:6.8.0-1"})

	var c registry.ImageChecker = checker // what your code under test takes
	for _, img := range []string{"quay.io/acme/nic:6.1.0-56-amd64", "quay.io/acme/nic:6.2.0-1", "quay.io/acme/nic:6.8.0-1"} {
		res, err := c.Check(context.Background(), registry.Request{Image: img})
		fmt.Println(img, res.Exists, res.Digest, registry.IsUnauthorized(err))
	}
	fmt.Println(len(checker.Requests()), "requests")
	// Output:
	// quay.io/acme/nic:6.1.0-56-amd64 true sha256:aaaa false
	// quay.io/acme/nic:6.2.0-1 false  false
	// quay.io/acme/nic:6.8.0-1 false  true
	// 3 requests
}
