package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/registry"
)

var workerHelp = help{
	synopsis: "kmm worker load|unload --config FILE [--image-dir DIR] [--firmware-host-path DIR] [--set-firmware-class-path] [--docker-config FILE] [--ca-file FILE]",
	about: "KMM's worker on the node: reads the worker config KMM writes, pulls the image (or takes --image-dir), and\n" +
		"loads or unloads the modules natively (finit_module; no kmod, no shell), with their firmware.",
	exit: "0 when the modules are loaded (or unloaded), 2 on any error.",
}

// runWorker implements "kmm worker load|unload": KMM's worker, natively.
func runWorker(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if code, ok := subcommand("kmm worker", workerHelp, args, []string{"load", "unload"}, stdout, stderr); !ok {
		return code
	}
	action := args[0]
	h := workerHelp
	h.synopsis = strings.Replace(h.synopsis, "load|unload", action, 1)
	fs := newFlagSet("kmm worker "+action, h)
	configFile := fs.String("config", "/etc/kmm-worker/config.yaml", "the worker config file KMM writes (ModuleConfig YAML)")
	imageDir := fs.String("image-dir", "", "directory holding the extracted image (<dir><dirName>/lib/modules/...), as KMM's init container leaves it in /tmp; when empty the image is pulled")
	pullDir := fs.String("pull-dir", "/var/run/kmmkit/images", "where pulled images are extracted")
	firmwareHost := fs.String("firmware-host-path", "/lib/firmware", "host directory firmware is copied to")
	setFirmwarePath := fs.Bool("set-firmware-class-path", false, "also point /sys/module/firmware_class/parameters/path at --firmware-host-path")
	dockerConfig := fs.String("docker-config", "", "the pull secret's credentials: a Docker config.json or .dockercfg file, or the directory a pull secret is mounted at (holding .dockerconfigjson or .dockercfg)")
	caFile := fs.String("ca-file", "", "PEM file of extra CA certificates for the registry")
	verbose := fs.Int("v", 1, "log verbosity")
	if code, ok := parseFlags(fs, args[1:], stdout, stderr); !ok {
		return code
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
	if cfg.KernelVersion == "" {
		// As KMM's worker (modprobe) does: the running kernel's modules.
		if cfg.KernelVersion, err = unameRelease(); err != nil {
			return fail(fmt.Errorf("%s has no kernelVersion: %w", *configFile, err))
		}
		log.Info("the worker config has no kernelVersion; using the running kernel's", "kernelVersion", cfg.KernelVersion)
	}
	root := *imageDir
	if root == "" {
		if root, err = pullImage(ctx, cfg, filepath.Join(*pullDir, safeName(cfg.ContainerImage)), *dockerConfig, *caFile, log); err != nil {
			return fail(err)
		}
	}
	native, err := node.NewNative(node.LinuxKernel{}, log)
	if err != nil {
		return fail(err)
	}
	w := &node.Worker{Native: native, FirmwareHostPath: *firmwareHost, SetFirmwareClassPath: *setFirmwarePath}
	var res *node.Result
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
		file, data, err := readDockerConfig(dockerConfig)
		if err != nil {
			return "", err
		}
		kc, err := registry.DockerConfigKeychain(data)
		if err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		req.Auth = registry.AuthInfo{Keychain: kc, Secrets: []string{file}}
	}
	res, err := client.Extract(ctx, req, dir, registry.ExtractOptions{
		DirName: cfg.Modprobe.DirName, KernelVersion: cfg.KernelVersion, FirmwarePath: cfg.Modprobe.FirmwarePath,
	})
	if err != nil {
		return "", err
	}
	if len(res.Skipped) > 0 {
		log.Info("left out absolute symbolic links of the image", "entries", res.Skipped)
	}
	return dir, nil
}

// safeName turns an image reference into a directory name.
func safeName(image string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(image)
}

// maxDockerConfig bounds a pull secret's credentials file.
const maxDockerConfig = 1 << 20

// readDockerConfig reads --docker-config: a file, or the directory a pull
// secret is mounted at, where it reads .dockerconfigjson
// (kubernetes.io/dockerconfigjson) or else .dockercfg
// (kubernetes.io/dockercfg). It returns the file it read.
func readDockerConfig(p string) (string, []byte, error) {
	st, err := os.Stat(p)
	if err != nil {
		return "", nil, fmt.Errorf("pull secret: %w", err)
	}
	file := p
	if st.IsDir() {
		file = ""
		for _, key := range []string{corev1.DockerConfigJsonKey, corev1.DockerConfigKey} {
			if _, err := os.Stat(filepath.Join(p, key)); err == nil {
				file = filepath.Join(p, key)
				break
			}
		}
		if file == "" {
			return "", nil, fmt.Errorf("pull secret mounted at %s has neither %s nor %s: it must be of type %s or %s",
				p, corev1.DockerConfigJsonKey, corev1.DockerConfigKey, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return "", nil, fmt.Errorf("pull secret: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDockerConfig+1))
	if err != nil {
		return "", nil, fmt.Errorf("pull secret %s: %w", file, err)
	}
	if len(data) > maxDockerConfig {
		return "", nil, fmt.Errorf("pull secret %s: larger than %d bytes", file, maxDockerConfig)
	}
	return file, data, nil
}
