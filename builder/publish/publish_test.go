package publish_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/publish"
)

func TestStagingTag(t *testing.T) {
	for image, want := range map[string]string{
		"registry.example.com:5000/acme/nic:6.1.0-57-amd64":                                                     "registry.example.com:5000/acme/nic:6.1.0-57-amd64-kmmkit-unlinted",
		"registry.example.com/acme/nic@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": "registry.example.com/acme/nic:0123456789abcdef-kmmkit-unlinted",
		"registry.example.com/acme/nic:" + strings.Repeat("t", 128):                                             "registry.example.com/acme/nic:" + strings.Repeat("t", 128-len("-kmmkit-unlinted")) + "-kmmkit-unlinted",
	} {
		got, err := publish.StagingTag(image)
		require.NoError(t, err, image)
		assert.Equal(t, want, got, image)
	}
	_, err := publish.StagingTag("Not A Reference")
	assert.ErrorContains(t, err, `image "Not A Reference"`)
}

func TestNewNeedsAClient(t *testing.T) {
	_, err := publish.New(nil)
	assert.EqualError(t, err, "publish: New needs a registry client")
}
