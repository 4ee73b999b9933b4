package v1beta1_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func TestValidateImageReference(t *testing.T) {
	p := field.NewPath("image")
	for ref, want := range map[string]string{
		"quay.io/acme/nic:v1":                           "",
		"quay.io/acme/nic@sha256:abc":                   "",
		"registry:5000/acme/nic:${KERNEL_FULL_VERSION}": "",
		"nic:v1":                    "",
		"quay.io/acme/nic":          "must explicitly set a tag or digest",
		"registry:5000/acme/nic":    "must explicitly set a tag or digest",
		"localhost:5000/nic":        "must explicitly set a tag or digest",
		"nic":                       "must explicitly set a tag or digest",
		"quay.io/acme/nic:v1 extra": "must not contain whitespace",
	} {
		errs := v1beta1.ValidateImageReference(ref, p)
		if want == "" {
			assert.Empty(t, errs, ref)
			continue
		}
		if assert.Len(t, errs, 1, ref) {
			assert.Equal(t, "image", errs[0].Field)
			assert.Contains(t, errs[0].Detail, want, ref)
		}
	}
}
