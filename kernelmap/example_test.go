package kernelmap_test

import (
	"errors"
	"fmt"

	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func ExampleMapper_Resolve() {
	module, err := v1beta1.DecodeModule([]byte(`
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: nic-driver, namespace: drivers}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: nic_driver}
      containerImage: registry.example.com/drivers/${MOD_NAME}:${KERNEL_FULL_VERSION}
      kernelMappings:
        - literal: 6.1.0-56-amd64
          containerImage: registry.example.com/drivers/nic-driver:lts
        - regexp: '^6\.'
          containerImage: ""
`))
	if err != nil {
		panic(err)
	}
	mapper, err := kernelmap.New() // share one Mapper: it caches compiled regexps
	if err != nil {
		panic(err)
	}
	for _, kernel := range []string{"6.1.0-56-amd64", "6.8.0-45-generic+", "5.14.0-284.el9.x86_64"} {
		rec, err := mapper.Resolve(module, kernel)
		switch {
		case errors.Is(err, kernelmap.ErrNoMapping):
			fmt.Printf("%s: not targeted\n", kernel)
		case err != nil:
			fmt.Printf("%s: %v\n", kernel, err)
		default:
			fmt.Printf("%s: mapping %d, image %s, dirName %s\n", kernel, rec.MappingIndex(), rec.Image(), rec.Modprobe().DirName)
		}
	}
	// Output:
	// 6.1.0-56-amd64: mapping 0, image registry.example.com/drivers/nic-driver:lts, dirName /opt
	// 6.8.0-45-generic+: mapping 1, image registry.example.com/drivers/nic-driver:6.8.0-45-generic, dirName /opt
	// 5.14.0-284.el9.x86_64: not targeted
}

func ExampleParseKernel() {
	k, err := kernelmap.ParseKernel("5.14.0-570.92.1.el9_6.x86_64")
	if err != nil {
		panic(err)
	}
	fmt.Println(k.XYZ(), k.Tag(), k.DNSName())
	// Output: 5.14.0 5.14.0-570.92.1.el9_6.x86_64 5-14-0-570-92-1-el9-6-x86-64
}

func ExampleMapper_Resolve_unknownVariable() {
	module := &v1beta1.Module{}
	module.Name, module.Namespace = "m", "ns"
	module.Spec.ModuleLoader = &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
		ContainerImage: "registry.example.com/m:${KERNEL_RELEASE}",
		KernelMappings: []v1beta1.KernelMapping{{Regexp: ".*"}},
	}}
	mapper, err := kernelmap.New()
	if err != nil {
		panic(err)
	}
	_, err = mapper.Resolve(module, "6.1.0-56-amd64")
	fmt.Println(err)
	// Output: spec.moduleLoader.container.containerImage: unknown variable "KERNEL_RELEASE" at offset 23 of "registry.example.com/m:${KERNEL_RELEASE}"
}
