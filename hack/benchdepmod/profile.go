//go:build !windows

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"

	"github.com/kmmkit/kmmkit/depmod"
)

// profileRun runs kmmkit's depmod once in this process on the tree under
// base, writing dir/cpu-NAME.pprof and dir/heap-NAME.pprof (allocations
// and what was in use at the end).
func profileRun(dir, base, kver, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cpuPath := filepath.Join(dir, "cpu-"+name+".pprof")
	heapPath := filepath.Join(dir, "heap-"+name+".pprof")
	f, err := os.Create(cpuPath)
	if err != nil {
		return err
	}
	defer f.Close()
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 64 << 10
	defer func() { runtime.MemProfileRate = old }()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	_, err = depmod.Run(context.Background(), depmod.Options{BaseDir: base, KernelVersion: kver, ConfigPaths: []string{}})
	pprof.StopCPUProfile()
	if err != nil {
		return fmt.Errorf("profiled run: %w", err)
	}
	h, err := os.Create(heapPath)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := pprof.Lookup("allocs").WriteTo(h, 0); err != nil {
		return err
	}
	fmt.Printf("profiles: go tool pprof -top %s; go tool pprof -sample_index=alloc_space -top %s\n", cpuPath, heapPath)
	return nil
}
