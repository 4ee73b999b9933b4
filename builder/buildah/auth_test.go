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

// FuzzNormalizeAuth: any input gives an error or a config buildah reads.
func FuzzNormalizeAuth(f *testing.F) {
	f.Add([]byte(`{"auths":{"r":{"username":"u","password":"p"}}}`))
	f.Add([]byte(`{"r":{"auth":"x"}}`))
	f.Fuzz(func(t *testing.T, cfg []byte) {
		out, err := normalizeAuth(cfg)
		if err != nil {
			return
		}
		if _, err := normalizeAuth(out); err != nil {
			t.Fatalf("output does not read back: %v", err)
		}
	})
}
