package v1beta1

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

func TestManifestDecode(t *testing.T) {
	objs := ReadManifest([]byte(`apiVersion: v1
kind: Secret
metadata: {name: pull, namespace: drivers}
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: eyJhdXRocyI6e319
stringData:
  extra: plain
---
apiVersion: v1
kind: ConfigMap
metadata: {name: dockerfile, namespace: drivers}
data:
  dockerfile: FROM scratch
datta: {}
---
apiVersion: v1
kind: Secret
metadata: {name: bad}
data:
  key: "not base64!"
`))
	require.Len(t, objs, 3)
	var s corev1.Secret
	require.Empty(t, objs[0].Decode(&s))
	assert.Equal(t, `{"auths":{}}`, string(s.Data[corev1.DockerConfigJsonKey]))
	assert.Equal(t, "plain", s.StringData["extra"])
	var cm corev1.ConfigMap
	errs := objs[1].Decode(&cm)
	assert.Equal(t, "FROM scratch", cm.Data["dockerfile"])
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Error(), `datta: Forbidden: unknown field; did you mean "data"?`)
	assert.Equal(t, 15, objs[1].LineOf(errs[0].Field))
	assert.NotEmpty(t, objs[2].Decode(&s), "data must be base64")
}
