package v1beta1_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// problems renders errors as "line: field: type: detail" for comparison.
func problems(o *v1beta1.ManifestObject, errs field.ErrorList) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = fmt.Sprintf("%d %s %s %s", o.LineOf(e.Field), e.Field, string(e.Type), e.Detail)
	}
	return out
}

const badModule = `# a Module with every kind of decoding problem
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: a, namespace: ns, lables: {x: y}}
spec:
  selector: {nic: "true", nic: "false"}
  modLoader: {}
  imageRebuildTriggerGeneration: "3"
  moduleLoader:
    container:
      modprobe: {moduleName: [x], ModuleName: y, parameters: 7}
      kernelMapping: []
      kernelMappings:
        - {regexp: '^6', containerImg: x, containerImage: 'r/x:v1'}
        - literal: 5
          literal: 6
          containerImage: r/x:v2
      imagePullPolicy: {}
  tolerations:
    - {key: a, tolerationSeconds: 1.5}
    - {key: b, tolerationSeconds: 99999999999999999999}
status: {moduleLoader: {desiredNumber: -1, nodesMatchingSelectorNumber: x}}
`

func TestModuleReportsEveryDecodingProblem(t *testing.T) {
	objs := v1beta1.ReadManifest([]byte(badModule))
	require.Len(t, objs, 1)
	o := &objs[0]
	assert.Equal(t, 1, o.Document)
	assert.Equal(t, -1, o.Item)
	assert.Equal(t, "ns", o.Namespace)
	assert.Equal(t, "a", o.Name)
	require.True(t, o.IsModule())
	m, errs := o.Module()
	require.NotNil(t, m, "the Module is decoded as far as it can be")
	assert.Equal(t, "r/x:v1", m.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage)
	assert.Equal(t, "/opt", m.Spec.ModuleLoader.Container.Modprobe.DirName, "defaults are applied")
	assert.Equal(t, map[string]string{"nic": "false"}, m.Spec.Selector, "the last of duplicate keys counts")
	assert.Equal(t, []string{
		`4 metadata.lables FieldValueForbidden unknown field; did you mean "labels"?`,
		`8 spec.imageRebuildTriggerGeneration FieldValueTypeInvalid must be an integer`,
		`7 spec.modLoader FieldValueForbidden unknown field; did you mean "moduleLoader"?`,
		`18 spec.moduleLoader.container.imagePullPolicy FieldValueTypeInvalid must be a string, not an object`,
		`12 spec.moduleLoader.container.kernelMapping FieldValueForbidden unknown field; did you mean "kernelMappings"?`,
		`14 spec.moduleLoader.container.kernelMappings[0].containerImg FieldValueForbidden unknown field; did you mean "containerImage"?`,
		`15 spec.moduleLoader.container.kernelMappings[1].literal FieldValueTypeInvalid must be a string`,
		`11 spec.moduleLoader.container.modprobe.ModuleName FieldValueForbidden unknown field; did you mean "moduleName"?`,
		`11 spec.moduleLoader.container.modprobe.moduleName FieldValueTypeInvalid must be a string, not a list`,
		`11 spec.moduleLoader.container.modprobe.parameters FieldValueTypeInvalid must be a list`,
		`20 spec.tolerations[0].tolerationSeconds FieldValueTypeInvalid must be an integer`,
		`21 spec.tolerations[1].tolerationSeconds FieldValueTypeInvalid must be an integer from -9223372036854775808 to 9223372036854775807`,
		`22 status.moduleLoader.nodesMatchingSelectorNumber FieldValueTypeInvalid must be an integer`,
		`6 spec.selector[nic] FieldValueDuplicate the key is given again on line 6 (first on line 6); the last value counts`,
		`15 spec.moduleLoader.container.kernelMappings[1].literal FieldValueDuplicate the key is given again on line 16 (first on line 15); the last value counts`,
	}, problems(o, errs))
	assert.Contains(t, errs[1].Error(), `spec.imageRebuildTriggerGeneration: Invalid value: "3": must be an integer`)
}

// TestReadManifestReportsEveryDocument reads a stream whose documents
// fail in different ways: each is reported, with its number and line,
// and the readable ones are decoded.
func TestReadManifestReportsEveryDocument(t *testing.T) {
	stream := `---
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: first}
spec: {selector: {}}
--- # a comment on the separator
a: [1
---
- 1
---
# only a comment
---
apiVersion: v1
kind: List
items:
- apiVersion: kmm.sigs.x-k8s.io/v1beta1
  kind: Module
  metadata: {name: in-list}
  spec: {selector: {}, tolerations: {}}
- 3
- apiVersion: kmm.sigs.x-k8s.io/v1alpha1
  kind: Module
  metadata: {name: old}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: ns}
---
null
---
{"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module", "metadata": {"name": "json"}, "spec": {"selector": {}, "selector": {"a": "b"}}}
`
	objs := v1beta1.ReadManifest([]byte(stream))
	type got struct {
		Doc, Item, Line int
		Kind, Name      string
		Err             string
		Problems        []string
	}
	var all []got
	for i := range objs {
		o := &objs[i]
		g := got{Doc: o.Document, Item: o.Item, Line: o.Line, Kind: o.Kind, Name: o.Name}
		if o.Err != nil {
			g.Err = o.Err.Error()
		} else if o.IsModule() {
			_, errs := o.Module()
			g.Problems = problems(o, errs)
		}
		all = append(all, g)
	}
	assert.Equal(t, []got{
		{Doc: 1, Item: -1, Line: 2, Kind: "Module", Name: "first", Problems: []string{}},
		{Doc: 2, Item: -1, Line: 7, Err: "invalid YAML or JSON: yaml: line 7: did not find expected ',' or ']'"},
		{Doc: 3, Item: -1, Line: 9, Err: "not a Kubernetes object: the document is a list"},
		{Doc: 5, Item: 0, Line: 16, Kind: "Module", Name: "in-list", Problems: []string{"19 spec.tolerations FieldValueTypeInvalid must be a list, not an object"}},
		{Doc: 5, Item: 1, Line: 20, Err: "items[1] is not a Kubernetes object: it is a number"},
		{Doc: 5, Item: 2, Line: 21, Kind: "Module", Name: "old", Problems: []string{`21 apiVersion FieldValueNotSupported supported values: "kmm.sigs.x-k8s.io/v1beta1"`}},
		{Doc: 6, Item: -1, Line: 25, Kind: "ConfigMap", Name: "cm"},
		{Doc: 8, Item: -1, Line: 31, Kind: "Module", Name: "json", Problems: []string{
			"31 spec.selector FieldValueDuplicate the key is given again on line 31 (first on line 31); the last value counts"}},
	}, all)
}

func TestSpecAt(t *testing.T) {
	objs := v1beta1.ReadManifest([]byte(`apiVersion: acme.io/v1
kind: NICDriver
metadata: {name: nic}
spec:
  module:
    selector: {nic: "true"}
    devicePlugin: {container: {image: dp:v1}}
    moduleLoader:
      container:
        modprobe: {moduleName: 3}
        kernelMappings: [{regexp: x, containerImage: "r/x:v1"}]
  modules:
    - {selector: {}, selecter: {}}
  byName:
    gpu.acme.io: {selector: [], moduleLoader: {container: {modprobe: {moduleName: gpu}, kernelMappings: [{literal: "6.1.0-1", containerImage: "r/gpu:v1"}]}}}
  scalar: 3
`))
	require.Len(t, objs, 1)
	o := &objs[0]

	spec, at, errs := o.ModuleSpecAt("spec.module")
	require.NotNil(t, spec)
	assert.Equal(t, "spec.module", at.String())
	assert.Equal(t, []string{"10 spec.module.moduleLoader.container.modprobe.moduleName FieldValueTypeInvalid must be a string"}, problems(o, errs))
	require.NotNil(t, spec.DevicePlugin, "a ModuleSpec has devicePlugin")
	assert.Equal(t, "/opt", spec.ModuleLoader.Container.Modprobe.DirName)

	embedded, at, errs := o.EmbeddedSpecAt("spec.module")
	require.NotNil(t, embedded)
	assert.Equal(t, "spec.module", at.String())
	assert.Equal(t, []string{
		"7 spec.module.devicePlugin FieldValueForbidden unknown field; the fields here are moduleLoader, imageRepoSecret, selector, tolerations, imageRebuildTriggerGeneration",
		"10 spec.module.moduleLoader.container.modprobe.moduleName FieldValueTypeInvalid must be a string",
	}, problems(o, errs))
	assert.Equal(t, "/opt", embedded.ModuleLoader.Container.Modprobe.DirName)

	_, at, errs = o.ModuleSpecAt("spec.modules[0]")
	assert.Equal(t, "spec.modules[0]", at.String())
	assert.Equal(t, []string{`13 spec.modules[0].selecter FieldValueForbidden unknown field; did you mean "selector"?`}, problems(o, errs))

	spec, at, errs = o.ModuleSpecAt("spec.byName[gpu.acme.io]")
	assert.Equal(t, "spec.byName[gpu.acme.io]", at.String())
	assert.Equal(t, []string{"15 spec.byName[gpu.acme.io].selector FieldValueTypeInvalid must be an object, not a list"}, problems(o, errs))
	assert.Equal(t, "gpu", spec.ModuleLoader.Container.Modprobe.ModuleName)

	_, _, errs = o.ModuleSpecAt("spec.scalar")
	assert.Equal(t, []string{"16 spec.scalar FieldValueTypeInvalid must be an object"}, problems(o, errs))

	for _, absent := range []string{"spec.mod", "spec.modules[1]", "spec.modules[x]", "spec.modules.0", "spec.module.selector.nic.x", "", ".", "spec.", "spec..module", "spec[module", "metadata.name.x"} {
		spec, at, errs := o.ModuleSpecAt(absent)
		assert.Nil(t, spec, absent)
		assert.Nil(t, at, absent)
		assert.Nil(t, errs, absent)
	}
}

// TestReadManifestAgreesWithDecodeModules reads every manifest of the
// tests and examples both ways: the same Modules, and no problem.
func TestReadManifestAgreesWithDecodeModules(t *testing.T) {
	for _, f := range []string{"testdata/every-field.yaml", "testdata/dra.yaml", "testdata/deprecated.yaml", "testdata/multi.yaml", "../../examples/modules/kmm-ci-a.yaml"} {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		want, err := v1beta1.DecodeModules(data)
		require.NoError(t, err)
		var got []v1beta1.Module
		for _, o := range v1beta1.ReadManifest(data) {
			require.NoError(t, o.Err, f)
			if !o.IsModule() {
				continue
			}
			m, errs := o.Module()
			assert.Empty(t, errs, f)
			got = append(got, *m)
		}
		assert.Equal(t, want, got, f)
	}
}

// TestModuleIsAsStrictAsDecodeModules feeds documents DecodeModules
// refuses to Module: each gets a problem.
func TestModuleIsAsStrictAsDecodeModules(t *testing.T) {
	const head = "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: m}\n"
	for _, body := range []string{
		"spec: {selector: {}, x: 1}",
		"spec: {selector: {}}\nspec: {selector: {}}",
		"spec: {selector: []}",
		"spec: {selector: {a: 1}}",
		"spec: {moduleLoader: {container: {modprobe: {args: {load: [1]}}}}}",
		"spec: {tolerations: [{key: a, operator: {}}]}",
		"metadata: {creationTimestamp: yesterday}",
		"metadata: {labels: {a: [b]}}",
		"spec: {moduleLoader: {serviceAccountName: true}}",
		"spec: {imageRebuildTriggerGeneration: 1.5}",
	} {
		doc := head + body + "\n"
		_, err := v1beta1.DecodeModules([]byte(doc))
		require.Error(t, err, body)
		objs := v1beta1.ReadManifest([]byte(doc))
		require.Len(t, objs, 1)
		_, errs := objs[0].Module()
		assert.NotEmpty(t, errs, "%s (DecodeModules: %v)", body, err)
	}
}

func TestUnknownFieldSuggestions(t *testing.T) {
	for key, want := range map[string]string{
		"moduleloader":   `did you mean "moduleLoader"?`,
		"ModuleLoader":   `did you mean "moduleLoader"?`,
		"modLoader":      `did you mean "moduleLoader"?`,
		"selecter":       `did you mean "selector"?`,
		"toleration":     `did you mean "tolerations"?`,
		"repoSecret":     `did you mean "imageRepoSecret"?`,
		"rebuildTrigger": `did you mean "imageRebuildTriggerGeneration"?`,
		"kernel":         "the fields here are",
		"xyz":            "the fields here are",
	} {
		doc := "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: m}\nspec: {selector: {}, " + key + ": {}}\n"
		objs := v1beta1.ReadManifest([]byte(doc))
		_, errs := objs[0].Module()
		require.Len(t, errs, 1, key)
		assert.Equal(t, "spec."+key, errs[0].Field)
		assert.Contains(t, errs[0].Detail, want, key)
	}
	objs := v1beta1.ReadManifest([]byte("apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: m}\nspec: {selector: {}, tolerations: [{keyy: a}]}\n"))
	_, errs := objs[0].Module()
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.tolerations[0].keyy", errs[0].Field)
	assert.Equal(t, `unknown field; did you mean "key"?; Kubernetes `+v1beta1.KubernetesAPIVersion+`'s Toleration has no such field (a field of a newer Kubernetes?)`, errs[0].Detail,
		"an unknown field of a Kubernetes type may be a newer Kubernetes's, as DecodeModules says")

	objs = v1beta1.ReadManifest([]byte("apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {nmae: m, " + strings.Repeat("a", 300) + ": 1}\n"))
	_, errs = objs[0].Module()
	require.Len(t, errs, 2)
	assert.Equal(t, "unknown field", errs[0].Detail, "ObjectMeta has too many fields to list")
	assert.Equal(t, `unknown field; did you mean "name"?`, errs[1].Detail)
}

func FuzzReadManifest(f *testing.F) {
	f.Add([]byte(badModule))
	for _, p := range []string{"testdata/every-field.yaml", "testdata/multi.yaml"} {
		data, err := os.ReadFile(p)
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte("a: &x [*x]\n---\nb: {c: [d, {e: f}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, o := range v1beta1.ReadManifest(data) {
			if o.Err != nil {
				continue
			}
			assert.Positive(t, o.Line)
			if o.IsModule() {
				m, errs := o.Module()
				if m == nil && len(errs) == 0 {
					t.Fatal("no Module and no problem")
				}
				for _, e := range errs {
					assert.Positive(t, o.LineOf(e.Field))
				}
			}
			_, _, _ = o.ModuleSpecAt("spec")
			_, _, _ = o.EmbeddedSpecAt("spec.module")
		}
	})
}

// TestReadManifestHostileInput: an alias bomb is refused, deep nesting
// and long keys are read without trouble.
func TestReadManifestHostileInput(t *testing.T) {
	var bomb strings.Builder
	bomb.WriteString("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for c := 'b'; c <= 'i'; c++ {
		fmt.Fprintf(&bomb, "%c: &%c [%s]\n", c, c, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*%c,", c-1), 9), ","))
	}
	objs := v1beta1.ReadManifest([]byte(bomb.String()))
	require.Len(t, objs, 1)
	assert.ErrorContains(t, objs[0].Err, "excessive aliasing")

	objs = v1beta1.ReadManifest([]byte(strings.Repeat("[", 5000) + strings.Repeat("]", 5000)))
	require.Len(t, objs, 1)
	assert.ErrorContains(t, objs[0].Err, "not a Kubernetes object")

	deep := "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: d}\nspec: " + strings.Repeat("{a: ", 3000) + "1" + strings.Repeat("}", 3000) + "\n"
	objs = v1beta1.ReadManifest([]byte(deep))
	require.Len(t, objs, 1)
	_, errs := objs[0].Module()
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.a", errs[0].Field)
	assert.Equal(t, 4, objs[0].LineOf(errs[0].Field))
}
