//go:build !windows

// Command benchdepmod runs kmod's depmod and kmmkit's on copies of the same
// module tree, several times each in alternation, and prints the median
// wall time, CPU time and peak RSS of each and their ratios, for each
// compression asked for.
//
//	go run ./hack/benchdepmod -tree ROOT [-runs 9] [-compress none,zst,xz] [-shipped ROOT2,...] [-profile DIR]
//
// ROOT is an unpacked linux-image package (hack/lib/kernel-tree.sh). With
// -compress zst or xz every .ko is first compressed as the kernel's
// "make modules_install" does (scripts/Makefile.modinst: `zstd -q`,
// `xz --check=crc32 --lzma2=dict=1MiB`), with the zstd and xz commands
// when installed (else with Go encoders set the same way), once, into a
// cache beside ROOT. "none" indexes the tree as shipped: a package whose
// modules are already compressed (Debian's 6.12 kernels ship .ko.xz) is
// benchmarked as it is. -shipped names more unpacked packages, each
// benchmarked as shipped after ROOT's trees (`make bench-depmod` adds the
// .ko.xz tree of hack/benchdepmod/backports-tree.sh). -profile writes a CPU and a heap profile of one
// in-process kmmkit run per tree into DIR.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	tree := flag.String("tree", os.Getenv("KMMKIT_KERNEL_TREE"), "unpacked linux-image package (holds lib/modules/<version>)")
	runs := flag.Int("runs", 9, "runs of each tool, after one warm-up run each")
	kmod := flag.String("kmod", "/usr/sbin/depmod", "kmod's depmod")
	compress := flag.String("compress", "none", "comma-separated compressions to benchmark: none, zst, xz (or all)")
	cache := flag.String("cache", "", "where compressed trees are kept (default: beside the tree)")
	profile := flag.String("profile", "", "directory to write pprof CPU and heap profiles of kmmkit's depmod into")
	shipped := flag.String("shipped", "", "comma-separated unpacked packages to benchmark as shipped, after -tree")
	flag.Parse()
	comps := strings.Split(strings.ReplaceAll(*compress, " ", ","), ",")
	if *compress == "all" {
		comps = []string{"none", "zst", "xz"}
	}
	var extra []string
	for _, t := range strings.Split(*shipped, ",") {
		if t = strings.TrimSpace(t); t != "" {
			extra = append(extra, t)
		}
	}
	if err := run(*tree, *kmod, *cache, *profile, comps, extra, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "benchdepmod:", err)
		os.Exit(1)
	}
}

// goals are the wall-time ratios kmmkit aims at, by compression.
var goals = map[string]string{"none": "<= 0.50", "zst": "<= 0.50", "xz": "<= 1.00, stretch 0.50"}

// summary is one line of the closing table.
type summary struct {
	label          string
	wall, rss, cpu float64
	goal           string
}

// kernelVersion is the one lib/modules/<version> of an unpacked package.
func kernelVersion(tree string) (string, error) {
	entries, err := os.ReadDir(filepath.Join(tree, "lib", "modules"))
	if err != nil || len(entries) != 1 {
		return "", fmt.Errorf("%s: want exactly one lib/modules/<version>", tree)
	}
	return entries[0].Name(), nil
}

func run(tree, kmod, cache, profile string, comps, shipped []string, runs int) error {
	if tree == "" {
		return fmt.Errorf("no tree: give -tree or set KMMKIT_KERNEL_TREE")
	}
	if runs < 1 {
		return fmt.Errorf("-runs %d: at least 1", runs)
	}
	kver, err := kernelVersion(tree)
	if err != nil {
		return err
	}
	for _, t := range shipped {
		if _, err := kernelVersion(t); err != nil {
			return err
		}
	}
	if cache == "" {
		cache = filepath.Join(filepath.Dir(filepath.Clean(tree)), "bench-trees")
	}
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
	var sums []summary
	for _, c := range comps {
		if _, ok := goals[c]; !ok {
			return fmt.Errorf("unknown compression %q: want none, zst or xz", c)
		}
		from, how := src, "as shipped"
		if c != "none" {
			from = filepath.Join(cache, kver, c)
			if how, err = compressTree(src, from, c); err != nil {
				return err
			}
		}
		s, err := bench(work, from, kver, c, how, kmod, ours, profile, runs)
		if err != nil {
			return err
		}
		sums = append(sums, s)
	}
	for _, t := range shipped {
		v, _ := kernelVersion(t)
		s, err := bench(work, filepath.Join(t, "lib", "modules", v), v, "none", "as shipped", kmod, ours, profile, runs)
		if err != nil {
			return err
		}
		sums = append(sums, s)
	}
	if len(sums) > 1 {
		fmt.Printf("\nsummary, kmmkit/kmod (median of %d runs each)\n", runs)
		w := len("tree")
		for _, s := range sums {
			w = max(w, len(s.label))
		}
		fmt.Printf("%-*s %6s %6s %9s  %s\n", w, "tree", "wall", "CPU", "peak RSS", "wall goal")
		for _, s := range sums {
			fmt.Printf("%-*s %6.2f %6.2f %9.2f  %s\n", w, s.label, s.wall, s.cpu, s.rss, s.goal)
		}
	}
	return nil
}

// bench times both tools on links of the tree at from.
func bench(work, from, kver, comp, how, kmod, ours, profile string, runs int) (summary, error) {
	bases := map[string]string{"kmod": filepath.Join(work, "kmod-"+comp), "kmmkit": filepath.Join(work, "kmmkit-"+comp)}
	for _, b := range bases {
		if err := linkTree(from, filepath.Join(b, "lib", "modules", kver)); err != nil {
			return summary{}, err
		}
	}
	defer func() {
		for _, b := range bases {
			os.RemoveAll(b)
		}
	}()
	cmds := map[string][]string{
		"kmod":   {kmod, "-b", bases["kmod"], kver},
		"kmmkit": {ours, "depmod", "-b", bases["kmmkit"], kver},
	}
	loadBefore := loadAverage()
	results := map[string][]sample{}
	for i := 0; i <= runs; i++ { // run 0 warms the page cache
		for _, name := range []string{"kmod", "kmmkit"} {
			s, err := measure(cmds[name])
			if err != nil {
				return summary{}, fmt.Errorf("%s: %w", name, err)
			}
			if i > 0 {
				results[name] = append(results[name], s)
			}
		}
	}
	loadAfter := loadAverage()
	dir := filepath.Join("lib", "modules", kver)
	for _, f := range []string{"modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.symbols.bin", "modules.softdep", "modules.devname", "modules.builtin.bin", "modules.builtin.alias.bin"} {
		a, errA := os.ReadFile(filepath.Join(bases["kmod"], dir, f))
		b, errB := os.ReadFile(filepath.Join(bases["kmmkit"], dir, f))
		if (errA == nil) != (errB == nil) || !bytes.Equal(a, b) {
			return summary{}, fmt.Errorf("%s differs between kmod and kmmkit", f)
		}
	}
	exts := moduleExtensions(from)
	fmt.Printf("\ntree %s (%s; %s), %d runs each, %d CPUs, load average %s before, %s after\n",
		kver, exts, how, runs, runtime.NumCPU(), loadBefore, loadAfter)
	fmt.Printf("%-8s %12s %12s %16s\n", "", "median wall", "median CPU", "median peak RSS")
	med := map[string]sample{}
	for _, name := range []string{"kmod", "kmmkit"} {
		med[name] = median(results[name])
		m := med[name]
		fmt.Printf("%-8s %9.0f ms %9.0f ms %12.1f MiB   (wall %s)\n", name, m.wall.Seconds()*1000, m.cpu.Seconds()*1000,
			float64(m.rssKiB)/1024, spread(results[name]))
	}
	s := summary{
		label: fmt.Sprintf("%s %s", kver, exts),
		wall:  med["kmmkit"].wall.Seconds() / med["kmod"].wall.Seconds(),
		cpu:   med["kmmkit"].cpu.Seconds() / med["kmod"].cpu.Seconds(),
		rss:   float64(med["kmmkit"].rssKiB) / float64(med["kmod"].rssKiB),
		goal:  goals[comp],
	}
	if comp == "none" && strings.Contains(exts, ".ko.xz") {
		s.goal = goals["xz"]
	} else if comp == "none" && strings.Contains(exts, ".ko.zst") {
		s.goal = goals["zst"]
	}
	fmt.Printf("ratio kmmkit/kmod: wall %.2f (goal %s), CPU %.2f, peak RSS %.2f (goal <= 1.00)\n", s.wall, s.goal, s.cpu, s.rss)
	if profile != "" {
		if err := profileRun(profile, bases["kmmkit"], kver, kver+"-"+comp); err != nil {
			return summary{}, err
		}
	}
	return s, nil
}

type sample struct {
	wall, cpu time.Duration
	rssKiB    int64
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
	return sample{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), rssKiB: ru.Maxrss}, nil
}

func median(s []sample) sample {
	walls := make([]time.Duration, len(s))
	cpus := make([]time.Duration, len(s))
	rss := make([]int64, len(s))
	for i, x := range s {
		walls[i], cpus[i], rss[i] = x.wall, x.cpu, x.rssKiB
	}
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	sort.Slice(cpus, func(i, j int) bool { return cpus[i] < cpus[j] })
	sort.Slice(rss, func(i, j int) bool { return rss[i] < rss[j] })
	return sample{wall: walls[len(walls)/2], cpu: cpus[len(cpus)/2], rssKiB: rss[len(rss)/2]}
}

// spread gives the fastest and slowest wall time, which tell how much the
// machine's load moved the runs.
func spread(s []sample) string {
	lo, hi := s[0].wall, s[0].wall
	for _, x := range s {
		lo, hi = min(lo, x.wall), max(hi, x.wall)
	}
	return fmt.Sprintf("%.0f–%.0f ms", lo.Seconds()*1000, hi.Seconds()*1000)
}

// loadAverage is the one-minute load average.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
