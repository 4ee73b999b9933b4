package v1beta1

import (
	"bytes"
	_ "embed"
)

//go:embed crd/kmm.sigs.x-k8s.io_modules.yaml
var crdYAML []byte

// CRD returns the CustomResourceDefinition of Module, as YAML, generated
// from these types. Its schema has the same required fields, the
// modprobe.dirName default and the devicePlugin/DRA rule as KMM's, so a
// test API server (envtest, say) can serve Modules without KMM installed.
func CRD() []byte { return bytes.Clone(crdYAML) }
