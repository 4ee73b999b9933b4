package ociimage

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// maxTag is the length limit of an OCI tag.
const maxTag = 128

// SiblingTag returns the reference of a sibling of image in the same
// repository: its tag followed by suffix ("v1-kmmkit-unsigned"), or, for
// a digest reference, the digest's first 16 hex digits followed by
// suffix; the base is cut so the tag fits 128 characters.
func SiblingTag(image, suffix string) (string, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", image, err)
	}
	base := ""
	switch r := ref.(type) {
	case name.Tag:
		base = r.TagStr()
	case name.Digest:
		base = strings.TrimPrefix(r.DigestStr(), "sha256:")
		base = base[:min(len(base), 16)]
	}
	if len(base)+len(suffix) > maxTag {
		base = base[:max(0, maxTag-len(suffix))]
	}
	return ref.Context().Name() + ":" + base + suffix, nil
}
