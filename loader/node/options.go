package node

import (
	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/internal/ctxlog"
)

// Option configures a Native loader (NewNative) or a Worker (NewWorker).
// WithLogger applies to both; the other options configure a Worker, and
// NewNative refuses them. Options only record a value.
type Option func(*options)

type options struct {
	log ctxlog.Logger
	// worker names the first Worker-only option given, for NewNative's
	// error.
	worker string

	firmwareHostPath string
	setFirmwareClass bool
	sysRoot          string
	hostRoot         string
}

func newOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// workerOnly records a Worker option.
func (o *options) workerOnly(name string) {
	if o.worker == "" {
		o.worker = name
	}
}

// WithLogger makes the loader log each module it loads or unloads to l
// (at V(1), or V(0) for a modprobe -v command). Without it, each call
// logs to the logger of its context (logr.FromContextOrDiscard).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// WithFirmwareHostPath sets the host directory a Worker copies firmware
// to (default /lib/firmware).
func WithFirmwareHostPath(dir string) Option {
	return func(o *options) { o.firmwareHostPath = dir; o.workerOnly("WithFirmwareHostPath") }
}

// WithSetFirmwareClassPath makes a Worker's load also write the firmware
// host path to /sys/module/firmware_class/parameters/path, as KMM's worker
// does with --set-firmware-class-path (default: it does not).
func WithSetFirmwareClassPath(set bool) Option {
	return func(o *options) { o.setFirmwareClass = set; o.workerOnly("WithSetFirmwareClassPath") }
}

// WithSysRoot sets where a Worker finds sysfs (default /sys).
func WithSysRoot(dir string) Option {
	return func(o *options) { o.sysRoot = dir; o.workerOnly("WithSysRoot") }
}

// WithHostRoot sets where a Worker finds the host's lib/modules, for a
// command without -d (default /; the worker Pod mounts the host's
// /lib/modules at /lib/modules).
func WithHostRoot(dir string) Option {
	return func(o *options) { o.hostRoot = dir; o.workerOnly("WithHostRoot") }
}
