// Command vminit is /init of the test VMs: it mounts /proc, /sys and /dev,
// loads a module from /mods with the native loader, reports the result on
// the console, unloads it, and powers the VM off. Lines it prints start
// with "KMMKIT ".
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/kmmkit/kmmkit/loader"
)

// config is /kmmkit.json.
type config struct {
	Root          string   `json:"root"`
	KernelVersion string   `json:"kernelVersion"`
	Module        string   `json:"module"`
	Parameters    []string `json:"parameters"`
	Unload        bool     `json:"unload"`
	Expect        []string `json:"expectFail"`
}

func main() {
	defer func() {
		if r := recover(); r != nil {
			fmt.Printf("KMMKIT panic: %v\n", r)
		}
		fmt.Println("KMMKIT done")
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}()
	for _, m := range []struct{ src, dst, typ string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			fmt.Printf("KMMKIT error: mount %s: %v\n", m.dst, err)
		}
	}
	data, err := os.ReadFile("/kmmkit.json")
	if err != nil {
		fmt.Printf("KMMKIT error: %v\n", err)
		return
	}
	var cfg config
	if err := json.Unmarshal(data, &cfg); err != nil {
		fmt.Printf("KMMKIT error: %v\n", err)
		return
	}
	run(cfg)
}

func run(cfg config) {
	k := loader.LinuxKernel{}
	rel, _ := k.Release()
	fmt.Printf("KMMKIT kernel: %s\n", rel)
	tree, err := loader.OpenTree(cfg.Root, cfg.KernelVersion)
	if err != nil {
		fmt.Printf("KMMKIT error: %v\n", err)
		return
	}
	n, err := loader.NewNative(k, logr.Discard())
	if err != nil {
		fmt.Printf("KMMKIT error: %v\n", err)
		return
	}
	ctx := context.Background()
	req := loader.Request{Tree: tree, Module: cfg.Module, Parameters: cfg.Parameters}
	res, err := n.Load(ctx, req)
	if err != nil {
		fmt.Printf("KMMKIT load-error: %v\n", err)
	} else {
		fmt.Printf("KMMKIT loaded: %s\n", strings.Join(res.Changed, ","))
	}
	printModules("after-load")
	if res != nil && len(res.Changed) > 0 {
		again, err := n.Load(ctx, req)
		if err == nil {
			fmt.Printf("KMMKIT reload-changed: %d\n", len(again.Changed))
		}
	}
	if cfg.Unload {
		res, err := n.Unload(ctx, req)
		if err != nil {
			fmt.Printf("KMMKIT unload-error: %v\n", err)
		} else {
			fmt.Printf("KMMKIT unloaded: %s\n", strings.Join(res.Changed, ","))
		}
		printModules("after-unload")
	}
}

func printModules(when string) {
	data, err := os.ReadFile("/proc/modules")
	if err != nil {
		fmt.Printf("KMMKIT error: %v\n", err)
		return
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	fmt.Printf("KMMKIT modules-%s: %s\n", when, strings.Join(names, ","))
}
