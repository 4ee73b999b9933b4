package node

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
	"github.com/kmmkit/kmmkit/internal/modprobe"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

// debianTree returns kmod's modprobe and Debian's module tree indexed by
// our depmod.
func debianTree(t *testing.T) (string, *Tree) {
	t.Helper()
	modprobe := testenv.LookPath(t, "modprobe", "apt-get install kmod")
	root, kver := testenv.KernelTree(t)
	base := t.TempDir()
	testenv.LinkTree(t, filepath.Join(root, "lib", "modules", kver), filepath.Join(base, "lib", "modules", kver), testenv.TreeOptions{})
	_, err := depmod.Run(t.Context(), depmod.Options{BaseDir: base, KernelVersion: kver, ConfigPaths: []string{}})
	require.NoError(t, err)
	tree, err := OpenTree(base, kver)
	require.NoError(t, err)
	return modprobe, tree
}

// TestPlanMatchesModprobe compares the load order of every module of the
// Debian tree with `modprobe --show-depends` on the same tree (indexed by
// our depmod).
func TestPlanMatchesModprobe(t *testing.T) {
	modprobe, tree := debianTree(t)
	base, kver := tree.Root, tree.KernelVersion

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

// TestCommandMatchesModprobe runs modprobe command lines through kmod's
// modprobe (--dry-run --verbose, which prints each insmod with its options)
// and through our reading of them (modprobe.Parse, then the load plan and
// the option string): the same modules, in the same order, with the same
// options.
func TestCommandMatchesModprobe(t *testing.T) {
	kmod, tree := debianTree(t)
	base, kver := tree.Root, tree.KernelVersion
	for _, argv := range [][]string{
		{"-vd", base, "async_raid6_recov", "x=1", "who=big world", "flag"},
		{"-d", base, "-a", "crc7", "async_xor", "async_pq"},
		{"-d" + base, "crc-itu-t", "-v", "p=1"},
		{"--dirname=" + base, "--first-time", "-b", "--", "crc8", "-x=1"},
		{"-d", base, "crc7", "-a", "libcrc32c"},
		{"-d", base, "crc32c"}, // an alias: every module of it
	} {
		cmd := exec.Command(kmod, append([]string{"-C", "/dev/null", "-S", kver, "--dry-run", "--verbose"}, argv...)...)
		var out bytes.Buffer
		cmd.Stdout = &out
		require.NoError(t, cmd.Run(), "modprobe %q", argv)
		var want []string
		seen := map[string]bool{}
		for _, l := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "insmod" && !seen[f[1]] {
				seen[f[1]] = true
				want = append(want, strings.TrimSpace(l))
			}
		}

		c, errs := modprobe.Parse(argv)
		require.Empty(t, errs)
		require.Equal(t, base, c.Dir)
		names := modprobe.Values(c.Names)
		steps, _, err := plan(Request{Tree: tree, Module: names[0], Modules: names[1:], Parameters: modprobe.Values(c.Params)})
		require.NoError(t, err)
		var got []string
		for _, s := range steps {
			got = append(got, strings.TrimSpace("insmod "+s.Path+" "+modprobe.Options(s.Params)))
		}
		require.Equal(t, want, got, "modprobe %q", argv)
	}
}
