package identity_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestSpecHashAnnotation(t *testing.T) {
	assert.Equal(t, "kmmkit.io/spec-hash", kmm.Owner("drivers", "nic").SpecHashAnnotation())
	assert.Equal(t, "nic.acme.io/spec-hash", acme.Owner("drivers", "nic").SpecHashAnnotation())
	for _, k := range []string{kmm.Owner("a", "b").SpecHashAnnotation(), acme.Owner("", "b").SpecHashAnnotation()} {
		assert.Empty(t, validation.IsQualifiedName(k), k)
	}
}
