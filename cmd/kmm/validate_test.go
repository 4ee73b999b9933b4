package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidateExample(t *testing.T) {
	code, out, stderr := runCmd(t, "", "validate", "-f", example)
	assert.Equal(t, exitOK, code, stderr)
	assert.Equal(t, "ConfigMap kmm-demo/kmm-ci-dockerfile: skipped (not a Module)\nModule kmm-demo/kmm-ci-a: valid\n", out)
	assert.Empty(t, stderr)
}

// stream is a manifest whose documents fail in every way validate
// reports, and one NICDriver embedding a spec.
const stream = `apiVersion: v1
kind: ConfigMap
metadata: {name: df, namespace: drivers}
data: {dockerfile: FROM scratch}
---
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: nic, namespace: drivers}
spec:
  selector: {nic: "true"}
  modLoader: {}
  moduleLoader:
    container:
      modprobe: {moduleName: nic, moduleName: nic2}
      kernelMappings:
        - regexp: '^6'
          containerImage: quay.io/acme/nic
          build: {dockerfileConfigMap: 3}
---
a: [1
---
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: rules, namespace: ns}
spec:
  moduleLoader:
    container:
      modprobe: {}
      kernelMappings: [{literal: "6.1.0-1", regexp: "x", containerImage: "r.io/x"}]
---
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: fine, namespace: ns}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: fine}
      kernelMappings: [{regexp: "^6", containerImage: "r.io/fine:v1"}]
---
apiVersion: acme.io/v1
kind: NICDriver
metadata: {name: nic-a, namespace: drivers}
spec:
  module:
    selecter: {nic: "true"}
    devicePlugin: {container: {image: "dp:v1"}}
    moduleLoader:
      container:
        modprobe: {moduleName: nic}
        kernelMappings: [{regexp: "^6", containerImage: "quay.io/acme/nic"}]
`

// TestValidateReportsEveryDocument: a broken document does not hide the
// next; decoding problems have field paths, lines and suggestions; rules
// are checked too; a type error is not repeated as a Required.
func TestValidateReportsEveryDocument(t *testing.T) {
	code, out, stderr := runCmd(t, stream, "validate", "-f", "-")
	assert.Equal(t, exitNo, code)
	assert.Empty(t, stderr)
	assert.Equal(t, `ConfigMap drivers/df: skipped (not a Module)
Module drivers/nic (document 2, line 6): 4 problem(s)
  line 11: spec.modLoader: Forbidden: unknown field; did you mean "moduleLoader"?
  line 14: spec.moduleLoader.container.modprobe.moduleName: Duplicate value: the key is given again on line 14 (first on line 14); the last value counts
  line 17: spec.moduleLoader.container.kernelMappings[0].containerImage: Invalid value: "quay.io/acme/nic": container image must explicitly set a tag or digest
  line 18: spec.moduleLoader.container.kernelMappings[0].build.dockerfileConfigMap: Invalid value: "3": must be an object
document 3 (line 20): invalid YAML or JSON: yaml: line 20: did not find expected ',' or ']'
Module ns/rules (document 4, line 22): 5 problem(s)
  line 25: spec.selector: Required value: use {} to select every node
  line 28: spec.moduleLoader.container.modprobe.rawArgs.load: Required value: rawArgs.load is required when moduleName is not set
  line 28: spec.moduleLoader.container.modprobe.rawArgs.unload: Required value: rawArgs.unload is required when moduleName is not set
  line 29: spec.moduleLoader.container.kernelMappings[0].regexp: Forbidden: regexp and literal are mutually exclusive
  line 29: spec.moduleLoader.container.kernelMappings[0].containerImage: Invalid value: "r.io/x": container image must explicitly set a tag or digest
Module ns/fine: valid
NICDriver drivers/nic-a: skipped (not a Module)
`, out)
}

func TestValidateEmbeddedSpec(t *testing.T) {
	code, out, stderr := runCmd(t, stream, "validate", "-f", "-", "--path", "spec.module")
	assert.Equal(t, exitNo, code)
	assert.Empty(t, stderr)
	assert.Equal(t, `ConfigMap drivers/df: skipped (no spec.module)
Module drivers/nic: skipped (no spec.module)
document 3 (line 20): invalid YAML or JSON: yaml: line 20: did not find expected ',' or ']'
Module ns/rules: skipped (no spec.module)
Module ns/fine: skipped (no spec.module)
NICDriver drivers/nic-a (document 6, line 41): 3 problem(s)
  line 45: spec.module.selector: Required value: use {} to select every node
  line 46: spec.module.selecter: Forbidden: unknown field; did you mean "selector"?
  line 51: spec.module.moduleLoader.container.kernelMappings[0].containerImage: Invalid value: "quay.io/acme/nic": container image must explicitly set a tag or digest
`, out)

	code, out, _ = runCmd(t, stream, "validate", "-f", "-", "--path", "spec.module", "--embedded")
	assert.Equal(t, exitNo, code)
	assert.Contains(t, out, `NICDriver drivers/nic-a (document 6, line 41): 4 problem(s)
  line 45: spec.module.selector: Required value: use {} to select every node
  line 46: spec.module.selecter: Forbidden: unknown field; did you mean "selector"?
  line 47: spec.module.devicePlugin: Forbidden: unknown field; the fields here are moduleLoader, imageRepoSecret, selector, tolerations, imageRebuildTriggerGeneration
`)

	// A Module's own spec is a spec at a path too.
	code, out, _ = runCmd(t, "", "validate", "-f", example, "--path", "spec")
	assert.Equal(t, exitOK, code)
	assert.Equal(t, "ConfigMap kmm-demo/kmm-ci-dockerfile: skipped (no spec)\nModule kmm-demo/kmm-ci-a: valid\n", out)

	fixed := `apiVersion: acme.io/v1
kind: GPUDriver
metadata: {name: gpu}
spec:
  drivers:
    - {selector: {}, moduleLoader: {container: {modprobe: {moduleName: gpu}, kernelMappings: [{literal: 6.1.0-1, containerImage: "r/gpu:v1"}]}}}
`
	code, out, _ = runCmd(t, fixed, "validate", "-f", "-", "--path", "spec.drivers[0]", "--embedded")
	assert.Equal(t, exitOK, code)
	assert.Equal(t, "GPUDriver gpu: valid\n", out)
}

func TestValidateErrors(t *testing.T) {
	dir := t.TempDir()
	cm := filepath.Join(dir, "cm.yaml")
	require.NoError(t, os.WriteFile(cm, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"), 0o600))
	broken := filepath.Join(dir, "broken.yaml")
	require.NoError(t, os.WriteFile(broken, []byte("a: [1\n"), 0o600))
	for _, tc := range []struct {
		name         string
		args         []string
		code         int
		stdout, want string
	}{
		{"no file", []string{"validate"}, exitError, "", "no manifest: give one with -f FILE"},
		{"missing file", []string{"validate", "-f", filepath.Join(dir, "nope.yaml")}, exitError, "", "nope.yaml: no such file"},
		{"no Module", []string{"validate", "-f", cm}, exitError, "ConfigMap cm: skipped (not a Module)\n", "cm.yaml: no Module of kmm.sigs.x-k8s.io/v1beta1 in the manifest"},
		{"nothing at the path", []string{"validate", "-f", example, "--path", "spec.module"}, exitError,
			"ConfigMap kmm-demo/kmm-ci-dockerfile: skipped (no spec.module)\nModule kmm-demo/kmm-ci-a: skipped (no spec.module)\n", "no object has spec.module"},
		{"only a broken document", []string{"validate", "-f", broken}, exitNo, "document 1 (line 1): invalid YAML or JSON: yaml: line 1: did not find expected ',' or ']'\n", ""},
		{"embedded without path", []string{"validate", "-f", example, "--embedded"}, exitError, "", "--embedded needs --path"},
		{"stray argument", []string{"validate", "-f", example, "x"}, exitError, "", `unexpected argument "x"`},
		{"bad flag", []string{"validate", "--nope"}, exitError, "", "flag provided but not defined: -nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runCmd(t, "", tc.args...)
			assert.Equal(t, tc.code, code)
			assert.Equal(t, tc.stdout, out)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

func TestValidateTypeErrorIsNotRepeated(t *testing.T) {
	doc := `apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: m, namespace: ns}
spec:
  selector: [nic]
  moduleLoader:
    container:
      modprobe: {moduleName: m}
      kernelMappings: [{regexp: "^6", containerImage: "r.io/m:v1"}]
`
	code, out, _ := runCmd(t, doc, "validate", "-f", "-")
	assert.Equal(t, exitNo, code)
	assert.Equal(t, "Module ns/m (document 1, line 1): 1 problem(s)\n  line 5: spec.selector: Invalid value: must be an object, not a list\n", out,
		"no Required for the selector decoding left empty")
}
