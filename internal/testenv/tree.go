package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TreeOptions select and rewrite files for LinkTree.
type TreeOptions struct {
	// Keep, when set, selects the relative paths to take.
	Keep func(rel string) bool
	// Transform, when set, rewrites each module file (a name holding
	// ".ko"): it returns the new relative name and content.
	Transform func(rel string, data []byte) (string, []byte)
}

// LinkTree copies the directory tree src to dst for a test, hard-linking
// files when it can (the big kernel tree then costs no disk), copying
// them otherwise.
func LinkTree(t testing.TB, src, dst string, opts TreeOptions) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if opts.Keep != nil && !opts.Keep(rel) {
			return nil
		}
		if opts.Transform != nil && strings.Contains(rel, ".ko") {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			name, out := opts.Transform(rel, data)
			return os.WriteFile(filepath.Join(dst, name), out, 0o644)
		}
		if os.Link(p, target) == nil {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
}
