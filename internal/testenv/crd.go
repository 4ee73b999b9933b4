package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRD creates (or updates) a CustomResourceDefinition from its YAML
// manifest on the test API server and waits until the resource is served.
func InstallCRD(t testing.TB, cfg *rest.Config, manifest []byte) {
	t.Helper()
	if err := ApplyCRD(context.Background(), cfg, manifest); err != nil {
		t.Fatal(err)
	}
}

// ApplyCRD is InstallCRD for programs that are not tests (benchmarks that
// run as their own binary): it creates or updates the
// CustomResourceDefinition of manifest and waits until it is served.
func ApplyCRD(ctx context.Context, cfg *rest.Config, manifest []byte) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(manifest, &crd.Object); err != nil {
		return fmt.Errorf("CRD manifest: %w", err)
	}
	// Test packages run in parallel against one API server, and the server
	// itself writes a CRD's status: an update that meets a newer version is
	// retried on that version rather than failing the test.
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		crd.SetResourceVersion("")
		_, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		existing, err := dyn.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		crd.SetResourceVersion(existing.GetResourceVersion())
		_, err = dyn.Resource(crdGVR).Update(ctx, crd, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("installing CRD %s: %w", crd.GetName(), err)
	}
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	version := ""
	if len(versions) > 0 {
		if v, ok := versions[0].(map[string]any); ok {
			version, _, _ = unstructured.NestedString(v, "name")
		}
	}
	gvr := schema.GroupVersionResource{Group: group, Version: version, Resource: plural}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s never became served", crd.GetName())
	}
	return nil
}
