package loader

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/depmod/index"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

// TestPlanMatchesModprobe compares the load order of every module of the
// Debian tree with `modprobe --show-depends` on the same tree (indexed by
// our depmod).
func TestPlanMatchesModprobe(t *testing.T) {
	modprobe := testenv.LookPath(t, "modprobe", "apt-get install kmod")
	root, kver := testenv.KernelTree(t)
	base := t.TempDir()
	testenv.LinkTree(t, filepath.Join(root, "lib", "modules", kver), filepath.Join(base, "lib", "modules", kver), testenv.TreeOptions{})
	_, err := depmod.Run(t.Context(), depmod.Options{BaseDir: base, KernelVersion: kver, ConfigPaths: []string{}})
	require.NoError(t, err)
	tree, err := OpenTree(base, kver)
	require.NoError(t, err)

	var names []string
	require.NoError(t, tree.dep.Walk(func(key string, _ []index.Value) error {
		names = append(names, key)
		return nil
	}))
	require.Greater(t, len(names), 4000)

	var mu sync.Mutex
	var mismatches []string
	work := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				cmd := exec.Command(modprobe, "-C", "/dev/null", "-d", base, "-S", kver, "--show-depends", name)
				var out bytes.Buffer
				cmd.Stdout = &out
				if err := cmd.Run(); err != nil {
					mu.Lock()
					mismatches = append(mismatches, name+": modprobe failed: "+err.Error())
					mu.Unlock()
					continue
				}
				// modprobe may list a module twice; loading skips the
				// second, so compare first occurrences.
				var want []string
				seen := map[string]bool{}
				for _, l := range strings.Split(out.String(), "\n") {
					if f := strings.Fields(l); len(f) >= 2 && f[0] == "insmod" && !seen[f[1]] {
						seen[f[1]] = true
						want = append(want, f[1])
					}
				}
				steps, err := tree.Plan(name, nil, nil)
				var got []string
				for _, s := range steps {
					got = append(got, s.Path)
				}
				if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
					mu.Lock()
					mismatches = append(mismatches, name+":\n  modprobe: "+strings.Join(want, " ")+"\n  ours:     "+strings.Join(got, " "))
					mu.Unlock()
				}
			}
		}()
	}
	for _, n := range names {
		work <- n
	}
	close(work)
	wg.Wait()
	if len(mismatches) > 0 {
		t.Fatalf("%d of %d modules load in another order than modprobe's, e.g.:\n%s", len(mismatches), len(names), strings.Join(mismatches[:min(5, len(mismatches))], "\n"))
	}
	t.Logf("%d modules: same load order as modprobe --show-depends", len(names))
}
