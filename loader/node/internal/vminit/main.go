//go:build linux

// Command vminit is /init of the test VMs: it mounts /proc, /sys and /dev,
// preloads modules if asked, runs the native worker (node.Worker) on a
// ModuleConfig for each action, or runs each command (the worker binary,
// /kmm, as a worker Pod's container would), reports what the kernel shows
// after each one, and powers the VM off. Lines it prints start with
// "KMMKIT ".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/go-logr/logr/funcr"
	"golang.org/x/sys/unix"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/reason"
)

// config is /kmmkit.json.
type config struct {
	// Preload are module files loaded directly before anything else.
	Preload []string `json:"preload"`
	// Worker is the worker config; ImageRoot holds the image content.
	Worker    v1beta1.ModuleConfig `json:"worker"`
	ImageRoot string               `json:"imageRoot"`
	// Workers, when set, give each action its own config.
	Workers []v1beta1.ModuleConfig `json:"workers"`
	// Dmesg prints the kernel log lines holding it after each action.
	Dmesg string `json:"dmesg"`
	// FirmwareHostPath is where firmware goes; the kernel is pointed at it.
	FirmwareHostPath string `json:"firmwareHostPath"`
	// Actions are "load" and "unload", run in order.
	Actions []string `json:"actions"`
	// Commands are run in order after the actions, each an argv.
	Commands [][]string `json:"commands"`
	// Holds are devices opened after one action and closed after
	// another, as a process using a module's device would.
	Holds []hold `json:"holds"`
	// Params ("module/param") and Files are reported after each action.
	Params []string `json:"params"`
	Files  []string `json:"files"`
}

// hold is a device held open from after action After to after action
// Until.
type hold struct {
	Device string `json:"device"`
	After  int    `json:"after"`
	Until  int    `json:"until"`
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
	k := node.LinuxKernel{}
	rel, _ := k.Release()
	fmt.Printf("KMMKIT kernel: %s\n", rel)
	for _, p := range cfg.Preload {
		f, err := os.Open(p)
		if err == nil {
			err = k.Load(f, "", false)
			f.Close()
		}
		fmt.Printf("KMMKIT preload %s: %v\n", p, err)
	}
	report("start", cfg)
	// The worker's log, as its container log would show it.
	log := funcr.New(func(prefix, args string) { fmt.Printf("KMMKIT log: %s\n", args) }, funcr.Options{})
	w, err := node.NewWorker(k, node.WithLogger(log),
		node.WithFirmwareHostPath(cfg.FirmwareHostPath), node.WithSetFirmwareClassPath(cfg.FirmwareHostPath != ""))
	if err != nil {
		fmt.Printf("KMMKIT error: %v\n", err)
		return
	}
	ctx := context.Background()
	seen := map[string]bool{}
	open := map[string]*os.File{}
	for i, action := range cfg.Actions {
		wc := &cfg.Worker
		if i < len(cfg.Workers) {
			wc = &cfg.Workers[i]
		}
		var res *node.Result
		if action == "load" {
			res, err = w.Load(ctx, wc, cfg.ImageRoot)
		} else {
			res, err = w.Unload(ctx, wc, cfg.ImageRoot)
		}
		tag := fmt.Sprintf("%s%d", action, i)
		if err != nil {
			fmt.Printf("KMMKIT %s-error: %v\n", tag, err)
			fmt.Printf("KMMKIT %s-reason: %s\n", tag, reason.Of(err))
		} else {
			fmt.Printf("KMMKIT %s-changed: %s\n", tag, strings.Join(res.Changed, ","))
			if action == "load" {
				fmt.Printf("KMMKIT %s-srcversion: %s\n", tag, res.SrcVersion)
			}
		}
		report(tag, cfg)
		if cfg.Dmesg != "" {
			dmesg(tag, cfg.Dmesg, seen)
		}
		for _, h := range cfg.Holds {
			switch i {
			case h.After:
				f, err := os.Open(h.Device)
				fmt.Printf("KMMKIT %s-hold %s: %v\n", tag, h.Device, err)
				open[h.Device] = f
			case h.Until:
				if f := open[h.Device]; f != nil {
					fmt.Printf("KMMKIT %s-close %s: %v\n", tag, h.Device, f.Close())
				}
			}
		}
	}
	for i, argv := range cfg.Commands {
		tag := fmt.Sprintf("cmd%d", i)
		var out bytes.Buffer
		c := exec.Command(argv[0], argv[1:]...)
		c.Stdout, c.Stderr = &out, &out
		err := c.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			fmt.Printf("KMMKIT %s-error: %v\n", tag, err)
			code = -1
		}
		fmt.Printf("KMMKIT %s-exit: %d\n", tag, code)
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			fmt.Printf("KMMKIT %s-output: %s\n", tag, l)
		}
		report(tag, cfg)
		if cfg.Dmesg != "" {
			dmesg(tag, cfg.Dmesg, seen)
		}
	}
}

// dmesg prints the kernel log records holding filter that are not in
// seen, and adds them to it.
func dmesg(when, filter string, seen map[string]bool) {
	// Raw reads: an os.File would wait on EAGAIN instead of returning.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Printf("KMMKIT error: %v\n", err)
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EPIPE {
			continue // records overwritten meanwhile
		}
		if err != nil || n <= 0 {
			return // EAGAIN: no more records
		}
		// A record is "prio,seq,time,flags;message".
		rec := string(buf[:n])
		_, msg, _ := strings.Cut(rec, ";")
		msg = strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])
		if strings.Contains(msg, filter) && !seen[msg] {
			seen[msg] = true
			fmt.Printf("KMMKIT %s-dmesg: %s\n", when, msg)
		}
	}
}

// report prints the loaded modules, the parameters and the files asked
// for.
func report(when string, cfg config) {
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
	fmt.Printf("KMMKIT %s-modules: %s\n", when, strings.Join(names, ","))
	for _, p := range cfg.Params {
		v, err := os.ReadFile("/sys/module/" + strings.Replace(p, "/", "/parameters/", 1))
		if err != nil {
			fmt.Printf("KMMKIT %s-param %s: absent\n", when, p)
			continue
		}
		fmt.Printf("KMMKIT %s-param %s: %s\n", when, p, strings.TrimSpace(string(v)))
	}
	for _, f := range cfg.Files {
		if st, err := os.Stat(f); err == nil {
			fmt.Printf("KMMKIT %s-file %s: %d bytes\n", when, f, st.Size())
		} else {
			fmt.Printf("KMMKIT %s-file %s: absent\n", when, f)
		}
	}
}
