package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

// runWorker implements "kmm worker load|unload": KMM's worker, natively.
func runWorker(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	usage := "usage: kmm worker load|unload --config FILE [--image-dir DIR] [--firmware-host-path DIR] [--set-firmware-class-path] [--docker-config FILE] [--ca-file FILE]"
	if len(args) == 0 || (args[0] != "load" && args[0] != "unload") {
		fmt.Fprintln(stderr, usage)
		return exitError
	}
	action := args[0]
	fs := flag.NewFlagSet("kmm worker "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "/etc/kmm-worker/config.yaml", "the worker config file KMM writes (ModuleConfig YAML)")
	imageDir := fs.String("image-dir", "", "directory holding the extracted image (<dir><dirName>/lib/modules/...), as KMM's init container leaves it in /tmp; when empty the image is pulled")
	pullDir := fs.String("pull-dir", "/var/run/kmmkit/images", "where pulled images are extracted")
	firmwareHost := fs.String("firmware-host-path", "/lib/firmware", "host directory firmware is copied to")
	setFirmwarePath := fs.Bool("set-firmware-class-path", false, "also point /sys/module/firmware_class/parameters/path at --firmware-host-path")
	dockerConfig := fs.String("docker-config", "", "Docker config.json with the pull secret's credentials")
	caFile := fs.String("ca-file", "", "PEM file of extra CA certificates for the registry")
	verbose := fs.Int("v", 1, "log verbosity")
	if err := fs.Parse(args[1:]); err != nil {
		return flagExit(err)
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "kmm worker %s: %v\n", action, err)
		return exitError
	}
	data, err := os.ReadFile(*configFile)
	if err != nil {
		return fail(err)
	}
	cfg, err := v1beta1.DecodeModuleConfig(data)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", *configFile, err))
	}
	log := newLogger(stderr, *verbose)
	root := *imageDir
	if root == "" {
		if root, err = pullImage(ctx, cfg, filepath.Join(*pullDir, safeName(cfg.ContainerImage)), *dockerConfig, *caFile, log); err != nil {
			return fail(err)
		}
	}
	native, err := loader.NewNative(loader.LinuxKernel{}, log)
	if err != nil {
		return fail(err)
	}
	w := &loader.Worker{Native: native, FirmwareHostPath: *firmwareHost, SetFirmwareClassPath: *setFirmwarePath}
	var res *loader.Result
	if action == "load" {
		res, err = w.Load(ctx, cfg, root)
	} else {
		res, err = w.Unload(ctx, cfg, root)
	}
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "%sed: %s; unchanged: %s\n", action, strings.Join(res.Changed, ","), strings.Join(res.Skipped, ","))
	return exitOK
}

// pullImage extracts the config's image (modules and firmware only) into
// dir and returns it.
func pullImage(ctx context.Context, cfg *v1beta1.ModuleConfig, dir, dockerConfig, caFile string, log logr.Logger) (string, error) {
	var opts []registry.Option
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return "", err
		}
		opts = append(opts, registry.WithCABundle(pem))
	}
	client, err := registry.NewClient(append(opts, registry.WithLogger(log))...)
	if err != nil {
		return "", err
	}
	req := registry.Request{Image: cfg.ContainerImage}
	if cfg.InsecurePull {
		req.TLS = v1beta1.TLSOptions{Insecure: true, InsecureSkipTLSVerify: true}
	}
	if dockerConfig != "" {
		data, err := os.ReadFile(dockerConfig)
		if err != nil {
			return "", err
		}
		kc, err := registry.DockerConfigKeychain(data)
		if err != nil {
			return "", fmt.Errorf("%s: %w", dockerConfig, err)
		}
		req.Auth = registry.AuthInfo{Keychain: kc, Secrets: []string{dockerConfig}}
	}
	if _, err := client.Extract(ctx, req, dir, registry.ExtractOptions{
		DirName: cfg.Modprobe.DirName, KernelVersion: cfg.KernelVersion, FirmwarePath: cfg.Modprobe.FirmwarePath,
	}); err != nil {
		return "", err
	}
	return dir, nil
}

// safeName turns an image reference into a directory name.
func safeName(image string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(image)
}
