package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// TestInstallCRDConcurrently installs one CRD from several tests at once,
// as parallel test packages do against the one test API server: every
// install succeeds, whichever creates and whichever meets a newer version.
func TestInstallCRDConcurrently(t *testing.T) {
	cfg := RESTConfig(t)
	plural := fmt.Sprintf("races%d", time.Now().UnixNano()%1_000_000_000)
	manifest := fmt.Appendf(nil, `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[1]s.test.kmmkit.io
spec:
  group: test.kmmkit.io
  names: {kind: Race%[2]d, listKind: Race%[2]dList, plural: %[1]s, singular: race%[2]d}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`, plural, time.Now().UnixNano()%1_000_000_000)
	t.Cleanup(func() {
		dyn, err := dynamic.NewForConfig(cfg)
		if err == nil {
			_ = dyn.Resource(crdGVR).Delete(context.Background(), plural+".test.kmmkit.io", metav1.DeleteOptions{})
		}
	})
	t.Run("installs", func(t *testing.T) {
		for i := range 6 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				InstallCRD(t, cfg, manifest)
			})
		}
	})
}
