package preflight_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/preflight"
	"github.com/kmmkit/kmmkit/registry"
)

// Before a node pool moves to a new kernel: would the operator's Modules
// work there? The condition goes to the operator's own status.
func ExampleChecker_Run() {
	srv := httptest.NewServer(ggcrregistry.New()) // an empty registry
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	reg, _ := registry.NewClient()
	checker, _ := preflight.New(k8sfake.NewClientset(), reg) // the operator's clientset
	spec := v1beta1.ModuleSpec{
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic", DirName: "/opt"},
			RegistryTLS:    v1beta1.TLSOptions{Insecure: true},
			KernelMappings: []v1beta1.KernelMapping{{Regexp: `^6\.1\.`, ContainerImage: host + "/acme/nic:${KERNEL_FULL_VERSION}"}},
		}},
		Selector: map[string]string{"acme.io/nic": "true"},
	}
	rep := checker.Run(context.Background(), []preflight.Module{{Namespace: "drivers", Name: "nic", Spec: spec}},
		[]string{"6.1.0-58-amd64", "6.12.9-amd64"})
	for _, r := range rep.Results {
		fmt.Println(r.Kernel, r.Verdict, r.Reason)
	}
	c := rep.Condition("KernelUpgradeReady")
	fmt.Println(c.Status == metav1.ConditionFalse, c.Reason)
	// Output:
	// 6.1.0-58-amd64 Fails ImageNotFound
	// 6.12.9-amd64 Fails NoMapping
	// true PreflightFailed
}
