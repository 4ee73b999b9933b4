package v1beta1

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	require.NoError(t, err)
	return data
}

// TestRoundTripEveryField proves field-for-field JSON compatibility: a
// manifest using every KMM field decodes strictly and encodes back to the
// same JSON document.
func TestRoundTripEveryField(t *testing.T) {
	for _, name := range []string{"every-field.yaml", "dra.yaml", "deprecated.yaml"} {
		t.Run(name, func(t *testing.T) {
			data := readTestdata(t, name)
			m, err := DecodeModule(data)
			require.NoError(t, err)

			want, err := yaml.YAMLToJSON(data)
			require.NoError(t, err)
			got, err := json.Marshal(m)
			require.NoError(t, err)
			assert.JSONEq(t, string(want), string(got))
		})
	}
}

func TestDecodeEveryFieldValues(t *testing.T) {
	m, err := DecodeModule(readTestdata(t, "every-field.yaml"))
	require.NoError(t, err)
	c := m.Spec.ModuleLoader.Container
	assert.Equal(t, "every-field", m.Name)
	assert.Equal(t, []string{"mod_a", "mod_b", "mod_c"}, c.Modprobe.ModulesLoadingOrder)
	assert.Equal(t, "debug", c.Build.KanikoParams.Tag)
	assert.Equal(t, []string{"mod_old"}, c.KernelMappings[0].InTreeModulesToRemove)
	assert.Equal(t, "", c.KernelMappings[1].ContainerImage)
	require.NotNil(t, m.Spec.ImageRebuildTriggerGeneration)
	assert.Equal(t, 3, *m.Spec.ImageRebuildTriggerGeneration)
	assert.Equal(t, int32(2), m.Status.ModuleLoader.AvailableNumber)
	assert.Empty(t, Validate(m), "the every-field manifest is also valid")
}

func TestDecodeMultiDocument(t *testing.T) {
	mods, err := DecodeModules(readTestdata(t, "multi.yaml"))
	require.NoError(t, err)
	require.Len(t, mods, 2)
	assert.Equal(t, "first", mods[0].Name)
	assert.Equal(t, DefaultDirName, mods[0].Spec.ModuleLoader.Container.Modprobe.DirName, "CRD default applied")
	assert.Equal(t, "second", mods[1].Name)
	assert.Equal(t, "/usr", mods[1].Spec.ModuleLoader.Container.Modprobe.DirName, "explicit dirName kept")

	_, err = DecodeModule(readTestdata(t, "multi.yaml"))
	assert.ErrorContains(t, err, "holds 2 Modules, want exactly one")
}

func TestDecodeExample(t *testing.T) {
	data, err := os.ReadFile("../../examples/modules/kmm-ci-a.yaml")
	require.NoError(t, err)
	m, err := DecodeModule(data)
	require.NoError(t, err)
	assert.Empty(t, Validate(m))
}

func TestDecodeJSONAndList(t *testing.T) {
	js := `{"apiVersion":"kmm.sigs.x-k8s.io/v1beta1","kind":"Module","metadata":{"name":"j"},"spec":{"selector":{}}}`
	m, err := DecodeModule([]byte(js))
	require.NoError(t, err)
	assert.Equal(t, "j", m.Name)

	list := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm}
- apiVersion: kmm.sigs.x-k8s.io/v1beta1
  kind: Module
  metadata: {name: from-list}
  spec: {selector: {}}
`
	mods, err := DecodeModules([]byte(list))
	require.NoError(t, err)
	require.Len(t, mods, 1)
	assert.Equal(t, "from-list", mods[0].Name)

	mlist := `{"apiVersion":"kmm.sigs.x-k8s.io/v1beta1","kind":"ModuleList","items":[
	{"apiVersion":"kmm.sigs.x-k8s.io/v1beta1","kind":"Module","metadata":{"name":"a"},"spec":{"selector":{}}},
	{"apiVersion":"kmm.sigs.x-k8s.io/v1beta1","kind":"Module","metadata":{"name":"b"},"spec":{"selector":{}}}]}`
	mods, err = DecodeModules([]byte(mlist))
	require.NoError(t, err)
	require.Len(t, mods, 2)
	assert.Equal(t, "b", mods[1].Name)
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"unknown top-level spec field", `apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: m}
spec:
  selector: {}
  nodeSelector: {a: b}
`, []string{`document 1`, `Module m`, `unknown field "spec.nodeSelector"`}},
		{"unknown nested field", `apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: m}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: m, dirname: /opt}
      kernelMappings:
        - regex: .*
          containerImage: r/m:v1
`, []string{`unknown field "spec.moduleLoader.container.kernelMappings[0].regex"`, `unknown field "spec.moduleLoader.container.modprobe.dirname"`}},
		{"wrong case is unknown", `apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: m}
spec: {Selector: {}}
`, []string{`unknown field "spec.Selector"`}},
		{"duplicate key", `apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: m}
spec:
  selector: {}
  selector: {a: b}
`, []string{"document 1", "invalid YAML or JSON", `"selector"`}},
		{"wrong type", `apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: m}
spec: {selector: [a]}
`, []string{"document 1", "Module", "spec.selector"}},
		{"other version", `apiVersion: kmm.sigs.x-k8s.io/v1alpha1
kind: Module
metadata: {name: old}
spec: {}
`, []string{`Module "old" has apiVersion "kmm.sigs.x-k8s.io/v1alpha1", want "kmm.sigs.x-k8s.io/v1beta1"`}},
		{"second document broken", `apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
---
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: m}
spec: {selector: {}, bogus: 1}
`, []string{"document 2", `unknown field "spec.bogus"`}},
		{"list item broken", `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"kmm.sigs.x-k8s.io/v1beta1","kind":"Module","metadata":{"name":"x"},"spec":{"oops":true}}]}`,
			[]string{"items[0]", `unknown field "spec.oops"`}},
		{"not yaml", "a: b: c", []string{"document 1", "invalid YAML or JSON"}},
		{"no module", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", []string{"no Module"}},
		{"empty", "", []string{"no Module"}},
		{"scalar", "just text", []string{"document 1", "not a Kubernetes object"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeModules([]byte(tc.input))
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestDecodeNoModuleSentinel(t *testing.T) {
	_, err := DecodeModules([]byte("# nothing\n---\n"))
	assert.ErrorIs(t, err, ErrNoModule)
}

func TestDeepCopyIndependent(t *testing.T) {
	m, err := DecodeModule(readTestdata(t, "every-field.yaml"))
	require.NoError(t, err)
	before, err := json.Marshal(m)
	require.NoError(t, err)
	cp := m.DeepCopy()
	cp.Spec.ModuleLoader.Container.KernelMappings[0].Build.DockerfileConfigMap.Name = "x"
	cp.Spec.ModuleLoader.Container.Build.BuildArgs[0].Value = "x"
	cp.Spec.ModuleLoader.Container.Sign.FilesToSign[0] = "x"
	cp.Spec.Selector["x"] = "x"
	*cp.Spec.ImageRebuildTriggerGeneration = 99
	cp.Spec.Tolerations[0].Key = "x"
	after, err := json.Marshal(m)
	require.NoError(t, err)
	assert.JSONEq(t, string(before), string(after))

	obj := m.DeepCopyObject()
	assert.Equal(t, m, obj)
	list := &ModuleList{Items: []Module{*m}}
	assert.Equal(t, list, list.DeepCopyObject())
}

func FuzzDecodeModules(f *testing.F) {
	for _, name := range []string{"every-field.yaml", "dra.yaml", "multi.yaml"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"kind":"List","apiVersion":"v1","items":[]}]}`))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mods, err := DecodeModules(data)
		if err != nil {
			if len(mods) != 0 {
				t.Fatalf("modules returned with an error")
			}
			return
		}
		for i := range mods {
			_ = Validate(&mods[i])
			if _, err := json.Marshal(&mods[i]); err != nil {
				t.Fatalf("decoded module does not marshal: %v", err)
			}
		}
	})
}

// newerFieldModule uses podCertificate.userAnnotations, a field that
// k8s.io/api v0.35 (Kubernetes 1.35) added to projected volumes, in a
// device plugin volume.
const newerFieldModule = `apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: nic, namespace: drivers}
spec:
  selector: {}
  devicePlugin:
    container: {image: "dp:v1"}
    volumes:
    - name: cert
      projected:
        sources:
        - podCertificate:
            signerName: example.com/signer
            keyType: ED25519
            credentialBundlePath: bundle.pem
            userAnnotations: {example.com/team: nic}
`

const newerFieldPath = "spec.devicePlugin.volumes[0].projected.sources[0].podCertificate.userAnnotations"

// TestDecodeNewerKubernetesField: a field of a newer Kubernetes inside an
// embedded Kubernetes type is refused with a message that says so, unless
// AcceptNewerKubernetesFields drops it with a warning; an unknown field of
// KMM's own types and a duplicated key stay errors either way.
func TestDecodeNewerKubernetesField(t *testing.T) {
	_, err := DecodeModule([]byte(newerFieldModule))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `Module nic: unknown field "`+newerFieldPath+`"`)
	assert.Contains(t, err.Error(), "Kubernetes 1.34's PodCertificateProjection has no such field (a field of a newer Kubernetes?)")
	assert.Contains(t, err.Error(), "AcceptNewerKubernetesFields")

	var warnings []string
	warn := AcceptNewerKubernetesFields(func(w string) { warnings = append(warnings, w) })
	m, err := DecodeModule([]byte(newerFieldModule), warn)
	require.NoError(t, err)
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], newerFieldPath)
	assert.Contains(t, warnings[0], "dropped")
	pc := m.Spec.DevicePlugin.Volumes[0].Projected.Sources[0].PodCertificate
	require.NotNil(t, pc, "the fields 1.34 knows are kept")
	assert.Equal(t, "example.com/signer", pc.SignerName)
	assert.Empty(t, Validate(m))

	typo := strings.Replace(newerFieldModule, "selector: {}", "selector: {}\n  imageRepoSecrets: {name: x}", 1)
	_, err = DecodeModule([]byte(typo), warn)
	assert.ErrorContains(t, err, `unknown field "spec.imageRepoSecrets"`, "a typo in KMM's own types is always an error")
	assert.NotContains(t, err.Error(), "newer Kubernetes")

	dup := `{"apiVersion":"kmm.sigs.x-k8s.io/v1beta1","kind":"Module","metadata":{"name":"nic"},
		"spec":{"selector":{},"devicePlugin":{"container":{"image":"dp:v1"},"volumes":[{"name":"a","name":"b","emptyDir":{}}]}}}`
	_, err = DecodeModule([]byte(dup), warn)
	assert.ErrorContains(t, err, `key "name" already set`, "a duplicated key is always an error")

	// A field unknown in a Kubernetes type the Module embeds at other
	// places: a volume mount and a toleration.
	for _, tc := range []struct{ doc, path, owner string }{
		{strings.Replace(newerFieldModule, `container: {image: "dp:v1"}`, `container: {image: "dp:v1", volumeMounts: [{name: cert, mountPath: /c, fromTheFuture: true}]}`, 1),
			"spec.devicePlugin.container.volumeMounts[0].fromTheFuture", "VolumeMount"},
		{strings.Replace(newerFieldModule, "selector: {}", "selector: {}\n  tolerations: [{key: k, operator: Exists, fromTheFuture: 1}]", 1),
			"spec.tolerations[0].fromTheFuture", "Toleration"},
	} {
		_, err := DecodeModule([]byte(tc.doc))
		require.Error(t, err)
		assert.Contains(t, err.Error(), `unknown field "`+tc.path+`"`)
		assert.Contains(t, err.Error(), "Kubernetes 1.34's "+tc.owner+" has no such field")
	}
}

// TestKubernetesAPIVersionMatchesGoMod: KubernetesAPIVersion names the
// k8s.io/api the module is built with.
func TestKubernetesAPIVersionMatchesGoMod(t *testing.T) {
	gomod, err := os.ReadFile("../../go.mod")
	require.NoError(t, err)
	found := false
	for _, line := range strings.Split(string(gomod), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "k8s.io/api" {
			found = true
			assert.True(t, strings.HasPrefix(f[1], "v0."+strings.TrimPrefix(KubernetesAPIVersion, "1.")+"."),
				"go.mod has k8s.io/api %s; KubernetesAPIVersion is %s", f[1], KubernetesAPIVersion)
		}
	}
	assert.True(t, found, "k8s.io/api in go.mod")
}
