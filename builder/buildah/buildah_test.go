package buildah_test

import (
	"testing"

	"github.com/kmmkit/kmmkit/builder/buildah"
	"github.com/kmmkit/kmmkit/internal/buildahtest"
)

// TestBuildahMultiStage runs the shared buildah scenario with the buildah
// command.
func TestBuildahMultiStage(t *testing.T) {
	buildahtest.MultiStage(t, buildah.New)
}
