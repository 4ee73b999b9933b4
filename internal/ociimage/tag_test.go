package ociimage

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSiblingTag(t *testing.T) {
	got, err := SiblingTag("registry.example.com/nic:6.1.0", "-x")
	require.NoError(t, err)
	assert.Equal(t, "registry.example.com/nic:6.1.0-x", got)
	got, err = SiblingTag("registry.example.com/nic@sha256:"+strings.Repeat("ab", 32), "-x")
	require.NoError(t, err)
	assert.Equal(t, "registry.example.com/nic:abababababababab-x", got)
	got, err = SiblingTag("registry.example.com/nic:"+strings.Repeat("t", 128), "-suffix")
	require.NoError(t, err)
	assert.Len(t, got[strings.LastIndex(got, ":")+1:], 128)
	assert.True(t, strings.HasSuffix(got, "-suffix"))
	_, err = SiblingTag("Not A Ref", "-x")
	assert.ErrorContains(t, err, `image "Not A Ref"`)
}
