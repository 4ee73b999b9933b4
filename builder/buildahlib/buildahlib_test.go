//go:build linux

package buildahlib_test

import (
	"os"
	"testing"

	"github.com/kmmkit/kmmkit/builder/buildahlib"
	"github.com/kmmkit/kmmkit/internal/buildahtest"
)

func TestMain(m *testing.M) {
	if buildahlib.Init() {
		return // a re-executed buildah helper has done its job
	}
	os.Exit(m.Run())
}

// TestLibraryMultiStage runs the shared buildah scenario with buildah as
// a library, in this process.
func TestLibraryMultiStage(t *testing.T) {
	buildahtest.MultiStage(t, buildahlib.New)
}
