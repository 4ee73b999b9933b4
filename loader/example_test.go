package loader_test

import (
	"fmt"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
)

// ExampleWorkerPod shows the worker Pod for one node and module, with
// options: the registry's CA mounted from a ConfigMap and passed to the
// worker.
func ExampleWorkerPod() {
	pod, err := loader.WorkerPod(loader.PodRequest{
		Node: "worker-1", Module: "nic", Namespace: "drivers", Action: loader.ActionLoad,
		Config: v1beta1.ModuleConfig{
			KernelVersion: "6.1.0-57-amd64", ContainerImage: "registry.example.com/nic:6.1.0-57-amd64",
			Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic"},
		},
	}, "quay.io/kmmkit/kmm-worker:v1", loader.WithCABundleConfigMap("registry-ca", "ca.crt"))
	if err != nil {
		panic(err)
	}
	c := pod.Spec.Containers[0]
	fmt.Println(pod.Namespace, pod.Name, pod.Spec.NodeName)
	fmt.Println(c.Image, c.Args)
	// Output:
	// drivers kmm-worker-worker-1-nic worker-1
	// quay.io/kmmkit/kmm-worker:v1 [worker load --config /etc/kmm-worker/config.yaml --pull-dir /var/run/kmmkit/images --firmware-host-path /lib/firmware --ca-file /etc/kmmkit/registry-ca/ca-bundle.crt]
}
