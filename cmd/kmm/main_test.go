package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const example = "../../examples/modules/kmm-ci-a.yaml"

func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestMapExampleYAML(t *testing.T) {
	code, out, stderr := runCmd(t, "", "map", "-f", example, "--kernel", "6.1.0-56-amd64")
	require.Equal(t, exitOK, code, stderr)
	var res struct {
		Kernel  string         `json:"kernel"`
		Matched bool           `json:"matched"`
		Record  map[string]any `json:"record"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(out), &res))
	assert.True(t, res.Matched)
	assert.Equal(t, "registry.example.com/kmm/kmm-ci-a:6.1.0-56-amd64", res.Record["containerImage"])
	assert.EqualValues(t, 0, res.Record["mappingIndex"])
	assert.Equal(t, "kmm-ci-a", res.Record["module"])
	assert.Contains(t, out, "dnsName: 6-1-0-56-amd64")
}

func TestMapSeveralKernelsJSON(t *testing.T) {
	code, out, _ := runCmd(t, "", "map", "-f", example, "--kernel", "6.1.0-57-cloud-amd64,6.8.0-1+", "--kernel", "5.14.0-284.el9.x86_64", "-o", "json")
	assert.Equal(t, exitNo, code, "one kernel has no mapping")
	var res []struct {
		Kernel    string `json:"kernel"`
		Matched   bool   `json:"matched"`
		NoMapping string `json:"noMapping"`
		Record    struct {
			ContainerImage string `json:"containerImage"`
			MappingIndex   int    `json:"mappingIndex"`
			Build          struct {
				BuildArgs []struct{ Name, Value string } `json:"buildArgs"`
			} `json:"build"`
		} `json:"record"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res, 3)
	assert.Equal(t, "registry.example.com:5000/kmm/kmm-ci-a:6.1.0-57-cloud-amd64", res[0].Record.ContainerImage)
	assert.Equal(t, 1, res[0].Record.MappingIndex)
	assert.Equal(t, []struct{ Name, Value string }{{"CI_BUILD", "true"}, {"SRC_TAG", "v1.2.0"}, {"FLAVOUR", "debian"}}, res[0].Record.Build.BuildArgs)
	assert.Equal(t, "registry.example.com/kmm/kmm-ci-a:6.8.0-6.8.0-1", res[1].Record.ContainerImage)
	assert.False(t, res[2].Matched)
	assert.Contains(t, res[2].NoMapping, `matches kernel "5.14.0-284.el9.x86_64"`)
}

func TestMapFromStdin(t *testing.T) {
	data, err := os.ReadFile(example)
	require.NoError(t, err)
	code, out, stderr := runCmd(t, string(data), "map", "-f", "-", "--kernel", "6.2.0-1-amd64", "-o", "json")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, `"containerImage": "registry.example.com/kmm/kmm-ci-a:6.2.0-6.2.0-1-amd64"`)
}

func TestMapErrors(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.yaml")
	require.NoError(t, os.WriteFile(invalid, []byte(`apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: bad, namespace: ns}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: bad}
      kernelMappings:
        - regexp: '^6'
          containerImage: r.io/bad:${KERNEL_NAME}
`), 0o600))
	unknownField := filepath.Join(dir, "unknown.yaml")
	require.NoError(t, os.WriteFile(unknownField, []byte(`apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: u}
spec: {selector: {}, modLoader: {}}
`), 0o600))
	two := filepath.Join(dir, "two.yaml")
	require.NoError(t, os.WriteFile(two, []byte(`apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: a}
spec: {selector: {}}
---
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: b}
spec: {selector: {}}
`), 0o600))

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no args", nil, exitError, "usage: kmm"},
		{"unknown command", []string{"frobnicate"}, exitError, `unknown command "frobnicate"`},
		{"no kernel", []string{"map", "-f", example}, exitError, "no kernel"},
		{"no file", []string{"map", "--kernel", "6.1.0-1"}, exitError, "no manifest"},
		{"missing file", []string{"map", "-f", filepath.Join(dir, "nope.yaml"), "--kernel", "6.1.0-1"}, exitError, "nope.yaml: no such file"},
		{"bad output", []string{"map", "-f", example, "--kernel", "6.1.0-1", "-o", "xml"}, exitError, `unknown output format "xml"`},
		{"stray argument", []string{"map", "-f", example, "6.1.0-1"}, exitError, "unexpected argument"},
		{"unknown field", []string{"map", "-f", unknownField, "--kernel", "6.1.0-1"}, exitError, `Module u (document 1, line 1):
    line 4: spec.modLoader: Forbidden: unknown field; did you mean "moduleLoader"?`},
		{"invalid module", []string{"map", "-f", invalid, "--kernel", "6.1.0-1"}, exitError, `spec.moduleLoader.container.kernelMappings[0].containerImage: Invalid value`},
		{"invalid module mapped anyway", []string{"map", "-f", invalid, "--kernel", "6.1.0-1", "--skip-validation"}, exitError, `unknown variable "KERNEL_NAME"`},
		{"two modules", []string{"map", "-f", two, "--kernel", "6.1.0-1"}, exitError, "choose one with --module"},
		{"module not there", []string{"map", "-f", two, "--module", "c", "--kernel", "6.1.0-1"}, exitError, `no Module named "c"`},
		{"short kernel", []string{"map", "-f", example, "--kernel", "6.1.0-1-amd64,6.1"}, exitError, `kernel "6.1": node.status.nodeInfo.kernelVersion: kernel version "6.1" has 2 component(s)`},
		{"bad flag", []string{"map", "--nope"}, exitError, "flag provided but not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, "", tc.args...)
			assert.Equal(t, tc.code, code)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

func TestMapReportsEveryKernel(t *testing.T) {
	code, out, stderr := runCmd(t, "", "map", "-f", example, "--kernel", "6.1,6.1.0-56-amd64,6.2", "-o", "json", "-v", "2")
	assert.Equal(t, exitError, code)
	var res []struct {
		Matched bool   `json:"matched"`
		Error   string `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res, 3)
	assert.Contains(t, res[0].Error, "expected at least three components")
	assert.True(t, res[1].Matched)
	assert.Contains(t, res[2].Error, `"6.2"`)
	assert.Contains(t, stderr, "2 errors occurred")
	assert.Contains(t, stderr, `"msg"="kernel mapping matched" "module"="kmm-ci-a"`)
}
