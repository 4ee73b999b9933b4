package openshift_test

import (
	"fmt"
	"time"

	buildfake "github.com/openshift/client-go/build/clientset/versioned/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/builder/openshift"
)

// ExampleNew configures the OpenShift Build backend: the Build client,
// the Secrets client for build and signing secrets, and options.
func ExampleNew() {
	b, err := openshift.New(buildfake.NewSimpleClientset(), openshift.WithSecrets(fake.NewClientset()), openshift.WithGCDelay(time.Hour))
	fmt.Println(b != nil, err)

	_, err = openshift.New(nil)
	fmt.Println(err)
	// Output:
	// true <nil>
	// openshift: New needs a build.openshift.io clientset
}
