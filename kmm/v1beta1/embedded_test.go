package v1beta1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/kmm/v1beta1/internal/embedtest"
)

// The limits a CRD must stay under.
const (
	// lastAppliedLimit is the most all annotations of an object may hold
	// (TotalAnnotationSizeLimitB); kubectl apply keeps the whole manifest
	// in one of them.
	lastAppliedLimit = 256 << 10
	// etcdLimit is etcd's default request size limit.
	etcdLimit = 1536 << 10
)

// TestEmbeddedModuleSpecFields keeps EmbeddedModuleSpec in step with
// ModuleSpec: the same fields with the same types and JSON names, less
// exactly devicePlugin and dra.
func TestEmbeddedModuleSpecFields(t *testing.T) {
	full := reflect.TypeFor[v1beta1.ModuleSpec]()
	small := reflect.TypeFor[v1beta1.EmbeddedModuleSpec]()
	var left []string
	j := 0
	for i := range full.NumField() {
		f := full.Field(i)
		if j < small.NumField() && small.Field(j).Name == f.Name {
			e := small.Field(j)
			assert.Equal(t, f.Type, e.Type, f.Name)
			assert.Equal(t, f.Tag.Get("json"), e.Tag.Get("json"), f.Name)
			j++
			continue
		}
		left = append(left, f.Tag.Get("json"))
	}
	assert.Equal(t, small.NumField(), j, "EmbeddedModuleSpec has fields ModuleSpec lacks, or in another order")
	assert.Equal(t, []string{"devicePlugin,omitempty", "dra,omitempty"}, left)
}

// TestEmbeddedModuleSpecConversion decodes the spec of a real Module into
// an EmbeddedModuleSpec strictly and converts it back: nothing is lost,
// and the result shares nothing with its source.
func TestEmbeddedModuleSpecConversion(t *testing.T) {
	data, err := os.ReadFile("../../examples/modules/kmm-ci-a.yaml")
	require.NoError(t, err)
	m, err := v1beta1.DecodeModule(data)
	require.NoError(t, err)
	require.NotNil(t, m.Spec.ModuleLoader)
	gen := 3
	m.Spec.ImageRebuildTriggerGeneration = &gen
	m.Spec.ImageRepoSecret = &corev1.LocalObjectReference{Name: "pull"}
	m.Spec.Tolerations = []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}}
	js, err := json.Marshal(m.Spec)
	require.NoError(t, err)

	var e v1beta1.EmbeddedModuleSpec
	strict, err := kjson.UnmarshalStrict(js, &e)
	require.NoError(t, err)
	require.Empty(t, strict, "a Module's spec without devicePlugin and dra decodes strictly")
	got := e.ModuleSpec()
	assert.Equal(t, m.Spec, got)

	got.ModuleLoader.Container.Modprobe.ModuleName = "changed"
	got.Selector["new"] = "label"
	*got.ImageRebuildTriggerGeneration = 4
	assert.Equal(t, m.Spec.ModuleLoader.Container.Modprobe.ModuleName, e.ModuleLoader.Container.Modprobe.ModuleName)
	assert.NotContains(t, e.Selector, "new")
	assert.Equal(t, 3, *e.ImageRebuildTriggerGeneration)

	var withPlugin v1beta1.EmbeddedModuleSpec
	strict, err = kjson.UnmarshalStrict([]byte(`{"selector":{},"devicePlugin":{"container":{"image":"dp:v1"}}}`), &withPlugin)
	require.NoError(t, err)
	require.Len(t, strict, 1)
	assert.Equal(t, `unknown field "devicePlugin"`, strict[0].Error())
}

func TestValidateEmbeddedSpec(t *testing.T) {
	spec := v1beta1.EmbeddedModuleSpec{ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
		Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic"},
		KernelMappings: []v1beta1.KernelMapping{{Regexp: "^6", ContainerImage: "r.io/nic"}},
	}}}
	errs := v1beta1.ValidateEmbeddedSpec(&spec, field.NewPath("spec", "module"))
	var got []string
	for _, e := range errs {
		got = append(got, e.Field+": "+string(e.Type))
	}
	assert.ElementsMatch(t, []string{
		"spec.module.selector: FieldValueRequired",
		"spec.module.moduleLoader.container.kernelMappings[0].containerImage: FieldValueInvalid",
	}, got)

	spec.Selector = map[string]string{}
	spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = "r.io/nic:${KERNEL_FULL_VERSION}"
	assert.Empty(t, v1beta1.ValidateEmbeddedSpec(&spec, field.NewPath("spec", "module")))
}

// crdJSON decodes a CRD manifest and returns it with its compact JSON,
// which is what kubectl apply stores and etcd holds.
func crdJSON(t *testing.T, manifest []byte) (map[string]any, int) {
	t.Helper()
	var crd map[string]any
	require.NoError(t, yaml.Unmarshal(manifest, &crd))
	js, err := json.Marshal(crd)
	require.NoError(t, err)
	return crd, len(js)
}

// at returns the object at a path of keys.
func at(t *testing.T, obj map[string]any, keys ...string) map[string]any {
	t.Helper()
	for _, k := range keys {
		next, ok := obj[k].(map[string]any)
		require.True(t, ok, "no %s in the CRD", k)
		obj = next
	}
	return obj
}

// schemaOf returns the openAPIV3Schema of a CRD's first version.
func schemaOf(t *testing.T, crd map[string]any) map[string]any {
	t.Helper()
	versions := at(t, crd, "spec")["versions"].([]any)
	return at(t, versions[0].(map[string]any), "schema", "openAPIV3Schema")
}

// withoutDescriptions returns a copy of a schema without its description
// texts, which follow the doc comments of each embedding field.
func withoutDescriptions(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			if k != "description" {
				out[k] = withoutDescriptions(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = withoutDescriptions(x)
		}
		return out
	}
	return v
}

// moduleSpecSchema is the schema of spec in the Module CRD.
func moduleSpecSchema(t *testing.T) map[string]any {
	t.Helper()
	crd, _ := crdJSON(t, v1beta1.CRD())
	return at(t, schemaOf(t, crd), "properties", "spec")
}

// replaceSpecs returns a copy of a CRD manifest in which the schemas of
// the given spec fields are the Module CRD's full ModuleSpec schema, and
// whose resource is renamed to kind: the CRD the embedder would have
// generated by embedding ModuleSpec.
func replaceSpecs(t *testing.T, manifest []byte, kind string, fields ...string) map[string]any {
	t.Helper()
	crd, _ := crdJSON(t, manifest)
	props := at(t, schemaOf(t, crd), "properties", "spec", "properties")
	for _, f := range fields {
		props[f] = moduleSpecSchema(t)
	}
	names := at(t, crd, "spec", "names")
	plural := "full" + names["plural"].(string)
	names["kind"], names["listKind"], names["plural"], names["singular"] = kind, kind+"List", plural, plural[:len(plural)-1]
	at(t, crd, "metadata")["name"] = plural + "." + at(t, crd, "spec")["group"].(string)
	return crd
}

// TestEmbeddedCRDSize measures the CRDs controller-gen generates for
// resources that embed one and two EmbeddedModuleSpecs, against those
// that embed ModuleSpec, and checks that the embedded schema is
// ModuleSpec's less devicePlugin and dra.
func TestEmbeddedCRDSize(t *testing.T) {
	nic, nicSize := crdJSON(t, embedtest.NICDriverCRD)
	gpu, gpuSize := crdJSON(t, embedtest.GPUDriverCRD)
	_, moduleSize := crdJSON(t, v1beta1.CRD())
	fullNICSize := jsonSize(t, replaceSpecs(t, embedtest.NICDriverCRD, "FullNICDriver", "module"))
	fullGPUSize := jsonSize(t, replaceSpecs(t, embedtest.GPUDriverCRD, "FullGPUDriver", "driver", "peerMemory"))
	t.Logf("CRD JSON sizes: Module %d B; one EmbeddedModuleSpec %d B (with ModuleSpec %d B, %.1fx); two %d B (with ModuleSpec %d B, %.1fx); kubectl apply limit %d B",
		moduleSize, nicSize, fullNICSize, float64(fullNICSize)/float64(nicSize), gpuSize, fullGPUSize, float64(fullGPUSize)/float64(gpuSize), lastAppliedLimit)

	assert.Less(t, nicSize, 32<<10, "one embedded spec stays far below kubectl's limit")
	assert.Less(t, gpuSize, 64<<10, "two embedded specs stay far below kubectl's limit")
	assert.Greater(t, fullGPUSize, lastAppliedLimit, "two ModuleSpecs do not fit kubectl apply, which is why EmbeddedModuleSpec exists")
	assert.Less(t, fullGPUSize, etcdLimit)

	want := moduleSpecSchema(t)
	delete(want, "x-kubernetes-validations") // the devicePlugin/dra rule
	wantProps := want["properties"].(map[string]any)
	delete(wantProps, "devicePlugin")
	delete(wantProps, "dra")
	for _, embedded := range []map[string]any{
		at(t, schemaOf(t, nic), "properties", "spec", "properties", "module"),
		at(t, schemaOf(t, gpu), "properties", "spec", "properties", "driver"),
		at(t, schemaOf(t, gpu), "properties", "spec", "properties", "peerMemory"),
	} {
		// (assert.True: a failure would print two 15 KB schemas.)
		assert.True(t, reflect.DeepEqual(withoutDescriptions(want), withoutDescriptions(embedded)),
			"the embedded schema is ModuleSpec's less devicePlugin and dra")
		// Below its own field the module loader is the same Go type: its
		// schema is identical, descriptions included.
		gotLoader := embedded["properties"].(map[string]any)["moduleLoader"].(map[string]any)
		wantLoader := wantProps["moduleLoader"].(map[string]any)
		assert.True(t, reflect.DeepEqual(wantLoader["properties"], gotLoader["properties"]), "moduleLoader's schema")
	}
}

func jsonSize(t *testing.T, v any) int {
	t.Helper()
	js, err := json.Marshal(v)
	require.NoError(t, err)
	return len(js)
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// applyCRD creates a CRD the way kubectl apply does, with the whole
// manifest in the last-applied-configuration annotation, and deletes it
// after the test.
func applyCRD(t *testing.T, dyn dynamic.Interface, crd map[string]any) error {
	t.Helper()
	ctx := context.Background()
	u := &unstructured.Unstructured{Object: crd}
	last, err := json.Marshal(crd)
	require.NoError(t, err)
	u.SetAnnotations(map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(last)})
	_ = dyn.Resource(crdGVR).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
	_, err = dyn.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{})
	if err == nil {
		t.Cleanup(func() { _ = dyn.Resource(crdGVR).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{}) })
	}
	return err
}

// TestEmbeddedCRDOnAPIServer applies the generated CRDs to a real
// kube-apiserver as kubectl apply does: the embedded ones are accepted
// and the one that embeds ModuleSpec twice is refused; a NICDriver is
// stored with its embedded spec as we decode it, defaults applied, and a
// devicePlugin in it is an unknown field.
func TestEmbeddedCRDOnAPIServer(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	nic, _ := crdJSON(t, embedtest.NICDriverCRD)
	gpu, _ := crdJSON(t, embedtest.GPUDriverCRD)
	require.NoError(t, applyCRD(t, dyn, nic))
	require.NoError(t, applyCRD(t, dyn, gpu))
	err = applyCRD(t, dyn, replaceSpecs(t, embedtest.GPUDriverCRD, "FullGPUDriver", "driver", "peerMemory"))
	require.Error(t, err, "the API server took a CRD with two ModuleSpecs and its last-applied annotation")
	assert.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.Contains(t, err.Error(), "metadata.annotations: Too long")

	testenv.InstallCRD(t, cfg, embedtest.NICDriverCRD) // waits until it is served
	ns := fmt.Sprintf("kmmkit-embed-%d", rand.Uint32())
	testenv.Namespace(t, cs, ns)
	nicGVR := schema.GroupVersionResource{Group: "embedtest.kmmkit.io", Version: "v1alpha1", Resource: "nicdrivers"}
	const manifest = `apiVersion: embedtest.kmmkit.io/v1alpha1
kind: NICDriver
metadata: {name: nic}
spec:
  queuesPerPort: 8
  module:
    selector: {nic: "true"}
    moduleLoader:
      container:
        modprobe: {moduleName: nic_drv}
        kernelMappings: [{regexp: '^6\.', containerImage: 'r.io/nic:${KERNEL_FULL_VERSION}'}]
`
	u := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal([]byte(manifest), &u.Object))
	ctx := context.Background()
	_, err = dyn.Resource(nicGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(t, err)
	got, err := dyn.Resource(nicGVR).Namespace(ns).Get(ctx, "nic", metav1.GetOptions{})
	require.NoError(t, err)
	js, err := json.Marshal(got.Object)
	require.NoError(t, err)
	var d embedtest.NICDriver
	strict, err := kjson.UnmarshalStrict(js, &d)
	require.NoError(t, err)
	require.Empty(t, strict, "the server's copy decodes strictly")
	spec := d.Spec.Module.ModuleSpec()
	assert.Equal(t, v1beta1.DefaultDirName, spec.ModuleLoader.Container.Modprobe.DirName, "the server applies the dirName default")
	assert.Empty(t, v1beta1.ValidateSpec(&spec, field.NewPath("spec", "module")))

	require.NoError(t, unstructured.SetNestedMap(u.Object, map[string]any{"container": map[string]any{"image": "dp:v1"}}, "spec", "module", "devicePlugin"))
	u.SetName("with-plugin")
	_, err = dyn.Resource(nicGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown field "spec.module.devicePlugin"`)
}
