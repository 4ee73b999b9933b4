package v1beta1_test

import (
	"fmt"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// An operator whose CRD embeds an EmbeddedModuleSpec at spec.module
// checks a manifest of its resource as `kmm validate --path spec.module
// --embedded` does: strict decoding with field paths and lines, then
// every rule of ValidateSpec, at the same path.
func ExampleEmbeddedModuleSpec() {
	manifest := []byte(`apiVersion: nic.acme.io/v1
kind: NICDriver
metadata: {name: nic, namespace: drivers}
spec:
  queuesPerPort: 8
  module:
    selector: {nic: "true"}
    devicePlugin: {container: {image: "quay.io/acme/nic-plugin:v1"}}
    moduleLoader:
      container:
        modprobe: {moduleName: nic}
        kernelMappings:
          - regexp: '^6\.'
            containerImage: quay.io/acme/nic
`)
	for _, o := range v1beta1.ReadManifest(manifest) {
		spec, at, errs := o.EmbeddedSpecAt("spec.module")
		if at == nil {
			continue // no spec.module in this object
		}
		errs = append(errs, v1beta1.ValidateEmbeddedSpec(spec, at)...)
		for _, e := range errs {
			fmt.Printf("%s %s/%s: line %d: %v\n", o.Kind, o.Namespace, o.Name, o.LineOf(e.Field), e)
		}
		ms := spec.ModuleSpec() // what kmm.Object.Spec takes
		fmt.Println("dirName:", ms.ModuleLoader.Container.Modprobe.DirName)
	}
	// Output:
	// NICDriver drivers/nic: line 8: spec.module.devicePlugin: Forbidden: unknown field; the fields here are moduleLoader, imageRepoSecret, selector, tolerations, imageRebuildTriggerGeneration
	// NICDriver drivers/nic: line 14: spec.module.moduleLoader.container.kernelMappings[0].containerImage: Invalid value: "quay.io/acme/nic": container image must explicitly set a tag or digest
	// dirName: /opt
}
