package kaniko_test

import (
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/builder/kaniko"
)

// ExampleNew configures the Kaniko backend with options; a bad option is
// refused by New, naming it.
func ExampleNew() {
	cs := fake.NewClientset()
	b, err := kaniko.New(cs, kaniko.WithServiceAccount("kmm-builder"), kaniko.WithGCDelay(time.Hour))
	fmt.Println(b != nil, err)

	_, err = kaniko.New(cs, kaniko.WithGCDelay(-time.Second))
	fmt.Println(err)
	// Output:
	// true <nil>
	// kaniko: WithGCDelay(-1s): the delay must not be negative
}
