package kmmtest

import (
	"crypto/sha256"
	"encoding/hex"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kmmkit/kmmkit/builder"
)

type (
	schemaGVR       = schema.GroupVersionResource
	builderReq      = builder.Request
	unstructuredObj = unstructured.Unstructured
)

// digestOf is a stable fake digest for an image.
func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}
