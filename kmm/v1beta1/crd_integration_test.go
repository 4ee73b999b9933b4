package v1beta1

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

var (
	crdGVR    = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	moduleGVR = SchemeGroupVersion.WithResource("modules")
)

// installCRD installs the embedded Module CRD on the test API server and
// returns a dynamic client and a fresh namespace.
func installCRD(t *testing.T) (dynamic.Interface, string) {
	t.Helper()
	cfg := testenv.RESTConfig(t)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	ctx := context.Background()

	crd := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal(CRD(), &crd.Object))
	_, err = dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		existing, gerr := dyn.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
		require.NoError(t, gerr)
		crd.SetResourceVersion(existing.GetResourceVersion())
		_, err = dyn.Resource(crdGVR).Update(ctx, crd, metav1.UpdateOptions{})
	}
	require.NoError(t, err)

	ns := fmt.Sprintf("kmmkit-crd-%d", rand.Uint32())
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	// The CRD serves once it is established and discovery knows it.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(moduleGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	require.NoError(t, err, "the Module CRD never became served")
	return dyn, ns
}

// toUnstructured turns a Module manifest document into an object for ns.
func toUnstructured(t *testing.T, doc, ns string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal([]byte(doc), &u.Object))
	u.SetNamespace(ns)
	delete(u.Object, "status")
	return u
}

// moduleDocs returns the Module documents of a testdata or example file.
func moduleDocs(t *testing.T, path string) []string {
	t.Helper()
	var docs []string
	for _, d := range strings.Split(string(readFile(t, path)), "\n---\n") {
		if strings.Contains(d, "kind: Module") {
			docs = append(docs, d)
		}
	}
	require.NotEmpty(t, docs)
	return docs
}

// TestCRDAcceptsWhatDecodeAccepts stores real manifests on a real API server
// through the generated CRD, reads them back, and decodes the server's JSON
// strictly: the server keeps every field, applies the dirName default as
// SetDefaults does, and adds nothing our types do not know.
func TestCRDAcceptsWhatDecodeAccepts(t *testing.T) {
	dyn, ns := installCRD(t)
	ctx := context.Background()
	files := []string{"testdata/every-field.yaml", "testdata/dra.yaml", "testdata/deprecated.yaml", "testdata/multi.yaml", "../../examples/modules/kmm-ci-a.yaml"}
	for _, f := range files {
		for _, doc := range moduleDocs(t, f) {
			u := toUnstructured(t, doc, ns)
			t.Run(f+"/"+u.GetName(), func(t *testing.T) {
				local, err := DecodeModule([]byte(doc))
				require.NoError(t, err)

				_, err = dyn.Resource(moduleGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
				require.NoError(t, err)
				got, err := dyn.Resource(moduleGVR).Namespace(ns).Get(ctx, u.GetName(), metav1.GetOptions{})
				require.NoError(t, err)
				js, err := json.Marshal(got.Object)
				require.NoError(t, err)
				fromServer, err := DecodeModule(js)
				require.NoError(t, err, "the server's copy decodes strictly")
				assert.Equal(t, local.Spec, fromServer.Spec, "the server stores the spec as we decode it, defaults included")
				assert.NotEmpty(t, fromServer.UID)
			})
		}
	}
}

// TestCRDAndValidateRejectTheSame sends manifests that break the CRD schema
// to the API server, and checks that Validate rejects each of them too, at
// the same field.
func TestCRDAndValidateRejectTheSame(t *testing.T) {
	dyn, ns := installCRD(t)
	ctx := context.Background()
	const head = "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: bad}\n"
	const loader = `  moduleLoader:
    container:
      modprobe: {moduleName: m}
`
	tests := []struct {
		name, spec, serverField, ourField string
	}{
		{"no selector", "spec:\n" + loader + "      kernelMappings: [{regexp: x, containerImage: 'r.io/m:v1'}]\n",
			"spec.selector", "spec.selector"},
		{"no kernel mappings", "spec:\n  selector: {}\n" + loader + "      kernelMappings: []\n",
			"spec.moduleLoader.container.kernelMappings", "spec.moduleLoader.container.kernelMappings"},
		{"dra and device plugin", "spec:\n  selector: {}\n  devicePlugin: {container: {image: 'dp:v1'}}\n  dra: {driverName: d.example.com, container: {image: 'dra:v1'}}\n",
			"spec", "spec.dra"},
		{"build without Dockerfile", "spec:\n  selector: {}\n" + loader + "      build: {buildArgs: [{name: A, value: b}]}\n      kernelMappings: [{regexp: x, containerImage: 'r.io/m:v1'}]\n",
			"spec.moduleLoader.container.build.dockerfileConfigMap", "spec.moduleLoader.container.build.dockerfileConfigMap.name"},
		{"sign without cert", "spec:\n  selector: {}\n" + loader + "      sign: {keySecret: {name: k}, filesToSign: [/opt/a.ko]}\n      kernelMappings: [{regexp: x, containerImage: 'r.io/m:v1'}]\n",
			"spec.moduleLoader.container.sign.certSecret", "spec.moduleLoader.container.sign.certSecret.name"},
		{"empty load args", "spec:\n  selector: {}\n  moduleLoader:\n    container:\n      modprobe: {moduleName: m, args: {load: [], unload: [-v]}}\n      kernelMappings: [{regexp: x, containerImage: 'r.io/m:v1'}]\n",
			"spec.moduleLoader.container.modprobe.args.load", "spec.moduleLoader.container.modprobe.args.load"},
		{"bad pull policy", "spec:\n  selector: {}\n" + loader + "      imagePullPolicy: Sometimes\n      kernelMappings: [{regexp: x, containerImage: 'r.io/m:v1'}]\n",
			"spec.moduleLoader.container.imagePullPolicy", "spec.moduleLoader.container.imagePullPolicy"},
		{"build arg without name", "spec:\n  selector: {}\n" + loader + "      build: {dockerfileConfigMap: {name: df}, buildArgs: [{value: b}]}\n      kernelMappings: [{regexp: x, containerImage: 'r.io/m:v1'}]\n",
			"spec.moduleLoader.container.build.buildArgs[0].name", "spec.moduleLoader.container.build.buildArgs[0].name"},
		{"device plugin without image", "spec:\n  selector: {}\n  devicePlugin: {container: {args: [x]}}\n",
			"spec.devicePlugin.container.image", "spec.devicePlugin.container.image"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := head + tc.spec
			_, err := dyn.Resource(moduleGVR).Namespace(ns).Create(ctx, toUnstructured(t, doc, ns), metav1.CreateOptions{})
			require.Error(t, err, "the API server accepted it")
			require.True(t, apierrors.IsInvalid(err), "want an Invalid error, got %v", err)
			assert.Contains(t, err.Error(), tc.serverField)

			m, err := DecodeModule([]byte(doc))
			require.NoError(t, err)
			errs := Validate(m)
			var fields []string
			for _, e := range errs {
				fields = append(fields, e.Field)
			}
			assert.Contains(t, fields, tc.ourField, "Validate: %v", errs)
		})
	}
}
