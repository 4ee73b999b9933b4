// Command benchfleet measures kmmkit at fleet scale on a real
// kube-apiserver and a real registry (`make bench-fleet`, which starts
// and stops them): it creates the nodes, the Modules (with
// imageRepoSecret) and their images, plays the kubelet for worker Pods,
// and runs the controller under test (package internal/fleetbench) in a
// child process of its own, so that the peak RSS and heap it reports are
// the controller's alone. It reads the servers from the KMMKIT_*
// variables hack/lib/services.sh exports. With BENCHFLEET_PROFILE=dir,
// the controller writes its heap profile to dir/controller.heap at the
// end, and to dir/controller-peak.heap at its largest live heap. With
// BENCHFLEET_GOMEMLIMIT=250MiB, say, the controller (and only it: a
// GOMEMLIMIT of the whole run would also bind the kube-apiserver and
// etcd) runs with that soft memory limit, as a container limit would set.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kmmkit/kmmkit/internal/fleetbench"
	"github.com/kmmkit/kmmkit/loader"
)

// command is what the driver asks the controller process.
type command struct {
	Cmd    string `json:"cmd"` // rollout, steady, mark, converge, mem
	Kernel string `json:"kernel,omitempty"`
	// Modules are to be available on Nodes nodes, Changed of them on
	// Kernel.
	Modules, Nodes, Changed int `json:",omitempty"`
}

// reply is the controller process's answer.
type reply struct {
	Phase  *fleetbench.Phase  `json:"phase,omitempty"`
	Memory *fleetbench.Memory `json:"memory,omitempty"`
	Errors int64              `json:"errors,omitempty"`
	Err    string             `json:"err,omitempty"`
	Synced time.Duration      `json:"synced,omitempty"`
}

func main() {
	var (
		nodes      = flag.Int("nodes", 5000, "nodes")
		kernels    = flag.Int("kernels", 50, "kernels the nodes run")
		modules    = flag.Int("modules", 10, "Modules, each on every node")
		changed    = flag.Int("changed", 1000, "nodes that reboot into a new kernel")
		qps        = flag.Float64("qps", 300, "the controller's client-side QPS")
		burst      = flag.Int("burst", 600, "the controller's client-side burst")
		workers    = flag.Int("workers", 10, "the controller's reconcile workers")
		par        = flag.Int("parallel", 32, "the driver's requests in flight (it has no client-side limit)")
		controller = flag.Bool("controller", false, "run as the controller process (internal)")
		namespace  = flag.String("namespace", "", "the controller's namespace (internal)")
		timeout    = flag.Duration("timeout", time.Hour, "give up after this long")
		ttl        = flag.Duration("ttl", time.Hour, "the registry cache TTL and re-verification interval of the controller (0: kmmkit's defaults, 5 and 10 minutes)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cfg, err := config()
	if err == nil {
		if *controller {
			err = runController(ctx, cfg, fleetbench.ControllerConfig{Namespace: *namespace, QPS: float32(*qps), Burst: *burst,
				Workers: *workers, CAFile: os.Getenv("KMMKIT_REGISTRY_CA"), Progress: os.Stderr, TTL: *ttl})
		} else {
			err = drive(ctx, cfg, fleetbench.Config{Run: fmt.Sprintf("bench%d", rand.Uint32()%100000), Nodes: *nodes, Kernels: *kernels,
				Modules: *modules, Registry: os.Getenv("KMMKIT_REGISTRY_TLS"), CAFile: os.Getenv("KMMKIT_REGISTRY_CA"),
				User: os.Getenv("KMMKIT_REGISTRY_USER"), Password: os.Getenv("KMMKIT_REGISTRY_PASSWORD"), Parallel: *par},
				*changed, os.Args[1:])
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfleet:", err)
		os.Exit(1)
	}
}

func config() (*rest.Config, error) {
	path := os.Getenv("KMMKIT_KUBECONFIG")
	if path == "" || os.Getenv("KMMKIT_REGISTRY_TLS") == "" || os.Getenv("KMMKIT_REGISTRY_CA") == "" {
		return nil, errors.New("KMMKIT_KUBECONFIG and KMMKIT_REGISTRY_{TLS,CA,USER,PASSWORD} must be set: run `make bench-fleet`, which starts the servers")
	}
	return clientcmd.BuildConfigFromFlags("", path)
}

// runController answers the driver's commands on stdin, one JSON reply a
// line on stdout.
func runController(ctx context.Context, cfg *rest.Config, cc fleetbench.ControllerConfig) error {
	out := json.NewEncoder(os.Stdout)
	start := time.Now()
	c, err := fleetbench.NewController(ctx, cfg, cc)
	if err != nil {
		return err
	}
	if err := out.Encode(reply{Synced: time.Since(start)}); err != nil {
		return err
	}
	// Commands come from the driver; when it goes (stdin ends), so does
	// this process, whatever it is waiting for.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan command)
	go func() {
		defer cancel()
		in := json.NewDecoder(os.Stdin)
		for {
			var cmd command
			if err := in.Decode(&cmd); err != nil {
				return
			}
			select {
			case cmds <- cmd:
			case <-ctx.Done():
				return
			}
		}
	}()
	if dir := os.Getenv("BENCHFLEET_PROFILE"); dir != "" {
		go profilePeaks(ctx, filepath.Join(dir, "controller-peak.heap"))
	}
	var mark fleetbench.Mark
	for {
		var cmd command
		select {
		case <-ctx.Done():
			return nil
		case cmd = <-cmds:
		}
		var r reply
		var err error
		switch cmd.Cmd {
		case "rollout":
			m := c.Mark()
			c.Run(ctx)
			err = c.WaitLoaded(ctx, cmd.Modules, cmd.Nodes, "", 0)
			p := c.Since(m)
			r.Phase = &p
		case "steady":
			var p fleetbench.Phase
			p, err = c.Steady(ctx)
			r.Phase = &p
		case "mark":
			mark = c.Mark()
		case "converge":
			err = c.WaitLoaded(ctx, cmd.Modules, cmd.Nodes, cmd.Kernel, cmd.Changed)
			p := c.Since(mark)
			r.Phase = &p
		case "mem":
			if dir := os.Getenv("BENCHFLEET_PROFILE"); dir != "" {
				err = writeHeapProfile(filepath.Join(dir, "controller.heap"))
			}
			m := c.Mem()
			r.Memory = &m
			r.Errors, _ = c.Errors()
		default:
			err = fmt.Errorf("unknown command %q", cmd.Cmd)
		}
		if err != nil {
			r.Err = err.Error()
		}
		if err := out.Encode(r); err != nil {
			return err
		}
	}
}

// drive builds the fleet, starts the controller process and prints what
// it measures, on its own lines.
func drive(ctx context.Context, cfg *rest.Config, fc fleetbench.Config, changed int, args []string) error {
	host, _ := os.Hostname()
	fmt.Printf("machine: %s, %d CPUs (shared with the kube-apiserver, etcd and the registry), %s/%s, %s\n",
		host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	driver := rest.CopyConfig(cfg)
	driver.QPS = -1 // the driver has no client-side limit; the controller has its own
	start := time.Now()
	f, err := fleetbench.Setup(ctx, driver, fc)
	if err != nil {
		return err
	}
	defer func() {
		// On servers of its own (make bench-fleet) this is moot; on shared
		// ones it leaves no nodes behind.
		if err := f.Cleanup(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "benchfleet: cleanup:", err)
		}
	}()
	pairs := fc.Nodes * fc.Modules
	fmt.Printf("setup: %d nodes on %d kernels, %d Modules with imageRepoSecret (%d node-module pairs), %d images on the htpasswd registry, in %.1f s\n",
		fc.Nodes, fc.Kernels, fc.Modules, pairs, fc.Modules*(fc.Kernels+1), time.Since(start).Seconds())
	kubelet, err := f.StartKubelet(ctx)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.CommandContext(ctx, exe, append(args, "-controller", "-namespace", f.Namespace)...)
	child.Stderr = os.Stderr
	if v := os.Getenv("BENCHFLEET_GOMEMLIMIT"); v != "" {
		// The controller's alone: the servers beside it hold far more.
		child.Env = append(os.Environ(), "GOMEMLIMIT="+v)
	}
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		_ = stdin.Close()
		_ = child.Wait()
	}()
	enc, dec := json.NewEncoder(stdin), json.NewDecoder(bufio.NewReader(stdout))
	ask := func(c command) (reply, error) {
		var r reply
		if err := enc.Encode(c); err != nil {
			return r, fmt.Errorf("controller process: %w", err)
		}
		if err := dec.Decode(&r); err != nil {
			return r, fmt.Errorf("controller process: %w", err)
		}
		if r.Err != "" {
			return r, fmt.Errorf("controller process: %s: %s", c.Cmd, r.Err)
		}
		return r, nil
	}
	var ready reply
	if err := dec.Decode(&ready); err != nil {
		return fmt.Errorf("controller process: %w", err)
	}
	fmt.Printf("controller: client QPS %g, burst %d, %d reconcile workers, registry cache TTL and re-verification %s, at most %d worker Pods per Module at once (loader.DefaultMaxWorkers); informers (nodes, worker Pods, Modules) synced in %.2f s\n",
		flagFloat("qps"), flagInt("burst"), flagInt("workers"), flag.Lookup("ttl").Value, loader.DefaultMaxWorkers, ready.Synced.Seconds())

	r, err := ask(command{Cmd: "rollout", Modules: fc.Modules, Nodes: fc.Nodes})
	if err != nil {
		return err
	}
	p := r.Phase
	fmt.Printf("first rollout: %.1f s to all loaded (controller CPU %.1f s); API writes %d = %.3f per (node, module) (pods %d, nodes %d, modules %d); reads %d (get %d, list %d); %d registry requests; %d passes; kubelet finished %d Pods\n",
		p.Wall.Seconds(), p.CPU.Seconds(), p.API.Writes(), float64(p.API.Writes())/float64(pairs), p.API.WritesOn("pods"), p.API.WritesOn("nodes"),
		p.API.WritesOn("modules"), p.API.Verb("get")+p.API.Verb("list"), p.API.Verb("get"), p.API.Verb("list"), p.Registry, p.Passes, kubelet.Finished())
	fmt.Printf("first rollout API requests: %s\n", p.API)
	for i := 1; i <= 3; i++ {
		r, err := ask(command{Cmd: "steady"})
		if err != nil {
			return err
		}
		p := r.Phase
		fmt.Printf("steady pass %d: %.3f s (controller CPU %.3f s) for %d Modules; API requests: %s; writes %d; registry requests %d\n",
			i, p.Wall.Seconds(), p.CPU.Seconds(), p.Passes, p.API, p.API.Writes(), p.Registry)
	}
	if _, err := ask(command{Cmd: "mark"}); err != nil {
		return err
	}
	start = time.Now()
	if err := f.ChangeKernels(ctx, changed); err != nil {
		return err
	}
	patched := time.Since(start)
	r, err = ask(command{Cmd: "converge", Modules: fc.Modules, Nodes: fc.Nodes, Kernel: fleetbench.Kernel(fc.Kernels), Changed: changed})
	if err != nil {
		return err
	}
	p = r.Phase
	np := p.API.WritesOn("pods") + p.API.WritesOn("nodes")
	fmt.Printf("kernel change on %d nodes (reboot into %s; the driver's status patches took %.1f s): %.1f s to loaded again; API writes %d = %.2f per node, %.2f per (node, module) (pods %d, nodes %d, modules %d); %d registry requests; %d passes\n",
		changed, fleetbench.Kernel(fc.Kernels), patched.Seconds(), p.Wall.Seconds(), p.API.Writes(), float64(p.API.Writes())/float64(changed),
		float64(np)/float64(changed*fc.Modules), p.API.WritesOn("pods"), p.API.WritesOn("nodes"), p.API.WritesOn("modules"), p.Registry, p.Passes)
	fmt.Printf("kernel change API requests: %s\n", p.API)
	r, err = ask(command{Cmd: "mem"})
	if err != nil {
		return err
	}
	m := r.Memory
	limit := "none"
	if m.MemoryLimit != math.MaxInt64 {
		limit = fmt.Sprintf("%.0f MB", mb(uint64(m.MemoryLimit)))
	}
	fmt.Printf("controller memory: peak RSS %.0f MB, peak heap %.0f MB, heap after GC %.0f MB (in use %.0f MB); %d GCs taking %.1f%% of its CPU (GOGC %d, memory limit %s); %d failed passes\n",
		mb(m.PeakRSS), mb(m.PeakHeap), mb(m.HeapAlloc), mb(m.HeapInuse), m.GCs, 100*m.GCCPU, m.GOGC, limit, r.Errors)
	if err := kubelet.Err(); err != nil {
		return err
	}
	return nil
}

// profilePeaks writes the heap profile to path whenever the live heap (as
// of the last GC) has grown by a tenth since it last did: the profile
// left is of the largest live heap, where the peak RSS comes from.
func profilePeaks(ctx context.Context, path string) {
	var written uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		if live := s[0].Value.Uint64(); live > written+written/10 {
			if err := writeHeapProfile(path); err == nil {
				written = live
			}
		}
	}
}

// writeHeapProfile writes the controller's heap profile (go tool pprof).
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func mb(b uint64) float64 { return float64(b) / 1e6 }

func flagFloat(name string) float64 {
	var v float64
	_, _ = fmt.Sscan(flag.Lookup(name).Value.String(), &v)
	return v
}

func flagInt(name string) int {
	var v int
	_, _ = fmt.Sscan(flag.Lookup(name).Value.String(), &v)
	return v
}
