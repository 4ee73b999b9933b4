package lint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kmmkit/kmmkit/registry"
)

// Image pulls req.Image and lints it for kernel. Only the directories a
// lint reads are extracted — the module directory, the rest of dirName
// and the usual module trees (to say where misplaced modules are), and
// the firmware path — into a temporary directory, through
// registry.Client.Extract: contained, every layer verified against its
// digest. The Report's Digest is the manifest linted; pass a digest
// reference to lint exactly the image a node pulls. An error is the
// registry's (reason.Of tells which) or says the image cannot be
// unpacked (reason.UnsafeImage, reason.ImageCorrupt, reason.LocalIOError).
func Image(ctx context.Context, client *registry.Client, req registry.Request, kernel string, opts ...Option) (*Report, error) {
	c, err := newConfig(kernel, opts)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "kmmkit-lint-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dest := filepath.Join(tmp, "image")
	res, err := client.Extract(ctx, req, dest, registry.ExtractOptions{
		DirName: c.dirName, KernelVersion: kernel, FirmwarePath: c.firmwarePath, Dirs: c.searchDirs(),
	})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return nil, fmt.Errorf("lint %s: %w", req.Image, err)
	}
	rep, err := lintTree(ctx, dest, kernel, c, res.Skipped)
	if err != nil {
		return nil, fmt.Errorf("lint %s: %w", req.Image, err)
	}
	rep.Source, rep.Digest = req.Image, res.Digest
	return rep, nil
}
