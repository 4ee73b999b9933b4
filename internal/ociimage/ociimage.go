// Package ociimage makes the reproducible images kmmkit builds without a
// container engine (builder/assemble's kmod images, the worker image):
// one uncompressed tar layer on a base (FROM scratch, with OCI media
// types, by default), with a fixed creation time, platform and history,
// so the same layer gives the same digest.
package ociimage

import (
	"bytes"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the creation time of images that name none: the Unix epoch.
var Epoch = time.Unix(0, 0).UTC()

// Spec describes an image.
type Spec struct {
	// Base is the image the layer goes on; nil means scratch (an empty
	// OCI image).
	Base v1.Image
	// Layer is the layer's uncompressed tar stream, already reproducible
	// (sorted entries, fixed owners, modes and times). It is stored
	// gzip-compressed, as an OCI layer.
	Layer []byte
	// History describes the layer; its Created is set to Created.
	History v1.History
	// Platform is the image's platform.
	Platform v1.Platform
	// Created is the image's creation time; zero means Epoch. It is
	// written in UTC, so the machine's time zone never changes a digest.
	Created time.Time
	// Config, when set, edits the image's runtime configuration
	// (entrypoint, labels, ...).
	Config func(*v1.Config)
}

// Image returns the image of s.
func Image(s Spec) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(s.Layer)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := s.Base
	if base == nil {
		base = mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	}
	created := s.Created.UTC()
	if s.Created.IsZero() {
		created = Epoch
	}
	h := s.History
	h.Created = v1.Time{Time: created}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: h})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = s.Platform.OS, s.Platform.Architecture, s.Platform.Variant
	cfg.Created = v1.Time{Time: created}
	if s.Config != nil {
		s.Config(&cfg.Config)
	}
	return mutate.ConfigFile(img, cfg)
}
