package kmmtest

import (
	"crypto/sha256"
	"encoding/hex"
)

// digestOf is a stable fake digest for an image.
func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}
