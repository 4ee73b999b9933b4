package buildah

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNormalizeAuth(t *testing.T) {
	out, err := normalizeAuth([]byte(`{"auths":{"r.example.com":{"username":"u","password":"p"},"q.example.com":{"auth":"dTpw"}}}`))
	require.NoError(t, err)
	assert.JSONEq(t, `{"auths":{"r.example.com":{"auth":"dTpw"},"q.example.com":{"auth":"dTpw"}}}`, string(out))
	out, err = normalizeAuth([]byte(`{"r.example.com":{"auth":"dTpw"}}`))
	require.NoError(t, err)
	assert.JSONEq(t, `{"auths":{"r.example.com":{"auth":"dTpw"}}}`, string(out), "the legacy .dockercfg form")
	_, err = normalizeAuth([]byte(`not json`))
	assert.ErrorContains(t, err, "docker config is not JSON")
}
