package v1beta1_test

import (
	"fmt"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func ExampleDecodeModules() {
	manifest := []byte(`
apiVersion: v1
kind: ConfigMap
metadata: {name: driver-dockerfile}
data: {dockerfile: "FROM scratch"}
---
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: nic-driver, namespace: drivers}
spec:
  selector: {feature.node.kubernetes.io/pci-8086.present: "true"}
  moduleLoader:
    container:
      modprobe: {moduleName: nic_driver}
      kernelMappings:
        - regexp: '^6\.'
          containerImage: registry.example.com/nic-driver:${KERNEL_FULL_VERSION}
`)
	modules, err := v1beta1.DecodeModules(manifest)
	if err != nil {
		fmt.Println(err)
		return
	}
	m := modules[0]
	fmt.Println(len(modules), m.Name, m.Spec.ModuleLoader.Container.Modprobe.DirName)

	_, err = v1beta1.DecodeModules([]byte(`
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: typo}
spec:
  selector: {}
  moduleLoader: {container: {modprobe: {moduleName: x}, kernelMapping: []}}
`))
	fmt.Println(err)
	// Output:
	// 1 nic-driver /opt
	// document 1: Module typo: unknown field "spec.moduleLoader.container.kernelMapping"
}

func ExampleValidate() {
	m, err := v1beta1.DecodeModule([]byte(`
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: nic-driver, namespace: drivers}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: nic_driver, modulesLoadingOrder: [nic_driver]}
      containerImage: registry.example.com:5000/nic-driver
      kernelMappings:
        - regexp: '^6\.('
        - literal: 6.1.0-56-amd64
          regexp: '^6\.1'
          containerImage: registry.example.com/nic-driver:${KERNEL_RELEASE}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range v1beta1.Validate(m) {
		fmt.Println(e)
	}
	// Output:
	// spec.moduleLoader.container.containerImage: Invalid value: "registry.example.com:5000/nic-driver": container image must explicitly set a tag or digest
	// spec.moduleLoader.container.modprobe.modulesLoadingOrder: Invalid value: ["nic_driver"]: must hold at least two modules: moduleName and what it depends on
	// spec.moduleLoader.container.kernelMappings[0].regexp: Invalid value: "^6\\.(": does not compile: error parsing regexp: missing closing ): `^6\.(`
	// spec.moduleLoader.container.kernelMappings[1].regexp: Forbidden: regexp and literal are mutually exclusive
	// spec.moduleLoader.container.kernelMappings[1].containerImage: Invalid value: "registry.example.com/nic-driver:${KERNEL_RELEASE}": unknown variable "KERNEL_RELEASE" at offset 32 of "registry.example.com/nic-driver:${KERNEL_RELEASE}" (known variables: KERNEL_FULL_VERSION, KERNEL_VERSION, KERNEL_XYZ, KERNEL_X, KERNEL_Y, KERNEL_Z, MOD_NAME, MOD_NAMESPACE)
}

// A manifest written for a newer Kubernetes: by default decoding refuses
// the field kmmkit's Kubernetes types do not have; with
// AcceptNewerKubernetesFields it is dropped and reported.
func ExampleAcceptNewerKubernetesFields() {
	manifest := []byte(`
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: nic-driver, namespace: drivers}
spec:
  selector: {}
  devicePlugin:
    container: {image: "registry.example.com/nic-plugin:v1"}
    volumes:
    - name: cert
      projected:
        sources:
        - podCertificate: {signerName: example.com/s, keyType: ED25519, credentialBundlePath: b.pem, userAnnotations: {example.com/team: nic}}
`)
	if _, err := v1beta1.DecodeModule(manifest); err != nil {
		fmt.Println("refused")
	}
	m, err := v1beta1.DecodeModule(manifest, v1beta1.AcceptNewerKubernetesFields(func(w string) { fmt.Println("warning:", w) }))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Spec.DevicePlugin.Volumes[0].Projected.Sources[0].PodCertificate.SignerName)
	// Output:
	// refused
	// warning: unknown field "spec.devicePlugin.volumes[0].projected.sources[0].podCertificate.userAnnotations": Kubernetes 1.34's PodCertificateProjection has no such field (a field of a newer Kubernetes?); dropped
	// example.com/s
}
