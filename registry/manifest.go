package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// parsedManifest is a manifest that proved to be one: an image manifest
// or an index, never both.
type parsedManifest struct {
	image *v1.Manifest
	index *v1.IndexManifest
}

// isManifestType reports the media types of image manifests and indexes
// that kubelets pull: OCI and Docker v2.
func isManifestType(mt types.MediaType) bool {
	switch types.MediaType(mediaType(string(mt))) {
	case types.OCIManifestSchema1, types.DockerManifestSchema2, types.OCIImageIndex, types.DockerManifestList:
		return true
	}
	return false
}

// parseManifest checks that a registry's 200 is a manifest: a known media
// type (the Content-Type, or the body's mediaType field when the
// Content-Type is a generic one) and a body that parses as one. An HTML
// page with a digest header is not an image.
func parseManifest(body []byte, contentType types.MediaType) (*parsedManifest, error) {
	ct := types.MediaType(mediaType(string(contentType)))
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     types.MediaType `json:"mediaType"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, fmt.Errorf("the body (%d bytes) is not JSON", len(body))
	}
	mt := ct
	if !isManifestType(ct) {
		if ct != "" && ct != "application/json" && ct != "application/octet-stream" && ct != "text/plain" {
			return nil, errors.New("not an image manifest")
		}
		mt = probe.MediaType
	}
	if probe.MediaType != "" && probe.MediaType != mt {
		return nil, fmt.Errorf("the Content-Type says %s, the body %s", mt, probe.MediaType)
	}
	if probe.SchemaVersion != 2 {
		return nil, fmt.Errorf("schemaVersion %d, not 2", probe.SchemaVersion)
	}
	switch mt {
	case types.OCIImageIndex, types.DockerManifestList:
		idx, err := v1.ParseIndexManifest(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		return &parsedManifest{index: idx}, nil
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		m, err := v1.ParseManifest(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if m.Config.Digest.Hex == "" {
			return nil, errors.New("the manifest names no config blob")
		}
		return &parsedManifest{image: m}, nil
	}
	return nil, fmt.Errorf("media type %q is not an image manifest or index", mt)
}

// notManifest is the error for a 200 that is not a manifest.
func notManifest(image, method string, ct types.MediaType, errs ...error) *Error {
	if ct == "" {
		ct = "none"
	}
	return &Error{Reason: ReasonUnknown, Image: image,
		Detail: fmt.Sprintf("%s answered 200 with Content-Type %s, which is not an image manifest: is the host a registry, or a proxy's page?", method, ct),
		Err:    errors.Join(errs...)}
}
