// Command benchdepmod runs kmod's depmod and kmmkit's on copies of the same
// module tree, several times each in alternation, and prints the median
// wall time and peak RSS of each and their ratios.
//
//	go run ./hack/benchdepmod -tree ROOT [-runs 7] [-compress none|zst|xz]
//
// ROOT is an unpacked linux-image package (hack/lib/kernel-tree.sh).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func main() {
	tree := flag.String("tree", os.Getenv("KMMKIT_KERNEL_TREE"), "unpacked linux-image package (holds lib/modules/<version>)")
	runs := flag.Int("runs", 7, "runs of each tool")
	kmod := flag.String("kmod", "/usr/sbin/depmod", "kmod's depmod")
	compress := flag.String("compress", "none", "compress every module first: none, zst or xz")
	flag.Parse()
	if err := run(*tree, *kmod, *compress, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "benchdepmod:", err)
		os.Exit(1)
	}
}

func run(tree, kmod, compression string, runs int) error {
	if tree == "" {
		return fmt.Errorf("no tree: give -tree or set KMMKIT_KERNEL_TREE")
	}
	entries, err := os.ReadDir(filepath.Join(tree, "lib", "modules"))
	if err != nil || len(entries) != 1 {
		return fmt.Errorf("%s: want exactly one lib/modules/<version>", tree)
	}
	kver := entries[0].Name()
	work, err := os.MkdirTemp("", "benchdepmod")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	ours := filepath.Join(work, "kmm")
	build := exec.Command("go", "build", "-o", ours, "./cmd/kmm")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building kmm: %w", err)
	}
	src := filepath.Join(tree, "lib", "modules", kver)
	bases := map[string]string{"kmod": filepath.Join(work, "kmod"), "kmmkit": filepath.Join(work, "kmmkit")}
	for _, b := range bases {
		if err := copyTree(src, filepath.Join(b, "lib", "modules", kver), compression); err != nil {
			return err
		}
	}
	cmds := map[string][]string{
		"kmod":   {kmod, "-b", bases["kmod"], kver},
		"kmmkit": {ours, "depmod", "-b", bases["kmmkit"], kver},
	}
	results := map[string][]sample{}
	for i := 0; i <= runs; i++ { // run 0 warms the page cache
		for _, name := range []string{"kmod", "kmmkit"} {
			s, err := measure(cmds[name])
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if i > 0 {
				results[name] = append(results[name], s)
			}
		}
	}
	for _, f := range []string{"modules.dep", "modules.dep.bin", "modules.alias.bin", "modules.symbols.bin"} {
		a, _ := os.ReadFile(filepath.Join(bases["kmod"], "lib", "modules", kver, f))
		b, _ := os.ReadFile(filepath.Join(bases["kmmkit"], "lib", "modules", kver, f))
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%s differs between the two runs", f)
		}
	}
	n, _ := countModules(src)
	fmt.Printf("tree %s (%d modules, compression %s), %d runs each, %d CPUs\n", kver, n, compression, runs, runtime.NumCPU())
	fmt.Printf("%-8s %12s %14s\n", "", "median wall", "median peak RSS")
	med := map[string]sample{}
	for _, name := range []string{"kmod", "kmmkit"} {
		med[name] = median(results[name])
		fmt.Printf("%-8s %10.0f ms %11.1f MiB\n", name, med[name].wall.Seconds()*1000, float64(med[name].rssKiB)/1024)
	}
	wallRatio := med["kmmkit"].wall.Seconds() / med["kmod"].wall.Seconds()
	rssRatio := float64(med["kmmkit"].rssKiB) / float64(med["kmod"].rssKiB)
	fmt.Printf("ratio kmmkit/kmod: wall %.2f (goal <= 0.50), peak RSS %.2f (goal <= 1.00)\n", wallRatio, rssRatio)
	return nil
}

type sample struct {
	wall   time.Duration
	rssKiB int64
}

func measure(argv []string) (sample, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%v: %s", err, stderr.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return sample{wall: wall, rssKiB: ru.Maxrss}, nil
}

func median(s []sample) sample {
	walls := make([]time.Duration, len(s))
	rss := make([]int64, len(s))
	for i, x := range s {
		walls[i], rss[i] = x.wall, x.rssKiB
	}
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	sort.Slice(rss, func(i, j int) bool { return rss[i] < rss[j] })
	return sample{wall: walls[len(walls)/2], rssKiB: rss[len(rss)/2]}
}

// copyTree hard-links (or compresses) src into dst.
func copyTree(src, dst, compression string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if compression == "none" || !strings.HasSuffix(p, ".ko") {
			if os.Link(p, target) == nil {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, 0o644)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var out bytes.Buffer
		switch compression {
		case "zst":
			w, _ := zstd.NewWriter(&out)
			w.Write(data)
			w.Close()
		case "xz":
			w, _ := xz.NewWriter(&out)
			w.Write(data)
			w.Close()
		default:
			return fmt.Errorf("unknown compression %q", compression)
		}
		return os.WriteFile(target+"."+compression, out.Bytes(), 0o644)
	})
}

func countModules(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			n++
		}
		return err
	})
	return n, err
}
