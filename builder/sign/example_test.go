package sign_test

import (
	"fmt"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/registry"
)

// ExampleNew makes the signer that signs an image's modules in place and
// pushes the result, on a registry client.
func ExampleNew() {
	c, err := registry.NewClient()
	if err != nil {
		panic(err)
	}
	s, err := sign.New(c, sign.WithLogger(logr.Discard()))
	fmt.Println(s != nil, err)

	_, err = sign.New(nil)
	fmt.Println(err)
	// Output:
	// true <nil>
	// sign: New needs a registry client
}
