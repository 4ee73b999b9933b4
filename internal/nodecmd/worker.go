package nodecmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/internal/bounded"
	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader/node"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// workerHelp is the help of "kmm worker".
var workerHelp = cli.Help{
	Synopsis: "kmm worker load|unload --config FILE [--image-dir DIR] [--pull-dir DIR] [--firmware-host-path DIR] [--set-firmware-class-path] [--docker-config FILE] [--ca-file FILE] [-v N]\n" +
		"       kmm worker kmod load|unload CONFIG [--firmware-path DIR] [-v N]",
	About: "KMM's worker on the node: reads the worker config KMM writes, pulls the image (or takes --image-dir), and\n" +
		"loads or unloads the modules natively (finit_module; no kmod, no shell), with their firmware.\n" +
		"The kmod form is KMM's own worker's command line, for KMM's operator running this worker image: run\n" +
		"'kmm worker kmod -h'.",
	Exit: "0 when the modules are loaded (or unloaded), 2 on any error.",
}

// kmodHelp is the help of "kmm worker kmod".
var kmodHelp = cli.Help{
	Synopsis: "kmm worker kmod load|unload CONFIG [--firmware-path DIR] [-v N]",
	About: "The command line of KMM's worker (cmd/worker), which KMM's operator passes to its worker image as arguments\n" +
		"(kmod load|unload /etc/kmm-worker/config.yaml [--firmware-path DIR]): the image content is where KMM's\n" +
		"init container copies it, /tmp<dirName> and /tmp<firmwarePath>; --firmware-path is the host's firmware\n" +
		"directory and, on load, the kernel's firmware search path. Flags may come before or after CONFIG.",
	Exit: "0 when the modules are loaded (or unloaded), 2 on any error.",
}

// ImageCABundle is where the worker image holds the extra CA certificates
// `kmm image worker --ca-bundle` lays in it, a private registry's CA say:
// the worker trusts them besides its built-in roots, unless --ca-file
// names other ones.
const ImageCABundle = "/etc/kmmkit/ca-bundle.crt"

// kmmSharedDir is where KMM's image-extractor init container copies the
// image's module tree and firmware, and KMM's worker reads them.
const kmmSharedDir = "/tmp"

// Worker runs "kmm worker ARGS" on env and returns the exit status.
func Worker(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) int {
	if code, ok := cli.Subcommand("kmm worker", workerHelp, args, []string{"load", "unload", "kmod"}, stdout, stderr); !ok {
		return code
	}
	if args[0] == "kmod" {
		return kmodWorker(ctx, env, args[1:], stdout, stderr)
	}
	action := args[0]
	h := workerHelp
	h.Synopsis = strings.Replace(strings.SplitN(h.Synopsis, "\n", 2)[0], "load|unload", action, 1)
	fs := cli.NewFlagSet("kmm worker "+action, h)
	configFile := fs.String("config", "/etc/kmm-worker/config.yaml", "the worker config file KMM writes (ModuleConfig YAML)")
	imageDir := fs.String("image-dir", "", "directory holding the extracted image (<dir><dirName>/lib/modules/...), as KMM's init container leaves it in /tmp; when empty the image is pulled")
	pullDir := fs.String("pull-dir", "/var/run/kmmkit/images", "where pulled images are extracted")
	firmwareHost := fs.String("firmware-host-path", "/lib/firmware", "host directory firmware is copied to")
	setFirmwarePath := fs.Bool("set-firmware-class-path", false, "also point /sys/module/firmware_class/parameters/path at --firmware-host-path")
	dockerConfig := fs.String("docker-config", "", "the pull secret's credentials: a Docker config.json or .dockercfg file, or the directory a pull secret is mounted at (holding .dockerconfigjson or .dockercfg)")
	caFile := fs.String("ca-file", "", "PEM file of extra CA certificates for the registry; default: "+ImageCABundle+" when the image has it")
	verbose := fs.Int("v", 1, "log verbosity")
	if code, ok := cli.ParseFlags(fs, args[1:], stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmm worker %s: unexpected argument %q (the config is --config FILE)\n", action, fs.Arg(0))
		return cli.ExitError
	}
	log := cli.NewLogger(stderr, *verbose)
	j := workerJob{
		env: env, action: action, what: "kmm worker " + action, configFile: *configFile, log: log,
		worker: []node.Option{
			node.WithFirmwareHostPath(env.path(*firmwareHost)), node.WithSetFirmwareClassPath(*setFirmwarePath),
			node.WithSysRoot(env.path("/sys")), node.WithHostRoot(env.path("/")),
		},
	}
	cfg, err := j.config()
	if err != nil {
		return j.fail(stderr, err)
	}
	if *caFile == "" {
		if _, err := os.Stat(env.path(ImageCABundle)); err == nil {
			*caFile = ImageCABundle
		}
	}
	root := env.path(*imageDir)
	if root == "" {
		dir := filepath.Join(env.path(*pullDir), safeName(cfg.ContainerImage))
		if root, err = pullImage(ctx, cfg, dir, env.path(*dockerConfig), env.path(*caFile), log); err != nil {
			return j.fail(stderr, err)
		}
	}
	return j.run(ctx, cfg, root, stdout, stderr)
}

// kmodWorker runs "kmm worker kmod load|unload CONFIG [--firmware-path
// P]": KMM's worker command line. As with KMM's cobra flags, the flags
// may come before or after CONFIG.
func kmodWorker(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) int {
	if code, ok := cli.Subcommand("kmm worker kmod", kmodHelp, args, []string{"load", "unload"}, stdout, stderr); !ok {
		return code
	}
	action := args[0]
	h := kmodHelp
	h.Synopsis = strings.Replace(h.Synopsis, "load|unload", action, 1)
	fs := cli.NewFlagSet("kmm worker kmod "+action, h)
	firmwarePath := fs.String("firmware-path", "", "the host's firmware directory, mounted at the same path; on load also written to /sys/module/firmware_class/parameters/path")
	verbose := fs.Int("v", 1, "log verbosity")
	positional, code, ok := cli.ParseInterspersed(fs, args[1:], stdout, stderr)
	if !ok {
		return code
	}
	if len(positional) != 1 {
		fmt.Fprintf(stderr, "kmm worker kmod %s: want exactly one argument, the config file; got %d\n\n", action, len(positional))
		h.Write(stderr, fs)
		return cli.ExitError
	}
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "firmware-path" })
	j := workerJob{
		env: env, action: action, what: "kmm worker kmod " + action, configFile: positional[0], log: cli.NewLogger(stderr, *verbose),
		worker: []node.Option{node.WithSysRoot(env.path("/sys")), node.WithHostRoot(env.path("/"))},
	}
	if set {
		// As KMM's worker: the firmware goes to the directory given, and
		// a load points the kernel at it.
		j.worker = append(j.worker, node.WithFirmwareHostPath(env.path(*firmwarePath)), node.WithSetFirmwareClassPath(action == "load"))
	}
	cfg, err := j.config()
	if err != nil {
		return j.fail(stderr, err)
	}
	return j.run(ctx, cfg, env.path(kmmSharedDir), stdout, stderr)
}

// workerJob is one run of the worker command.
type workerJob struct {
	env        Env
	action     string // load or unload
	what       string // the command, for messages
	configFile string
	log        logr.Logger
	worker     []node.Option // of the node.Worker
}

// fail writes the error as the worker's last line of output, which
// becomes its Pod's termination message: tagged with its reason when it
// carries one the pod loader reports (reason.ModuleInUse,
// reason.ModuleBuildMismatch), so the cluster
// side reports that reason rather than WorkerFailed.
func (j *workerJob) fail(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, reason.Tagged(fmt.Sprintf("%s: %v", j.what, oneLine(err)), reason.Of(err)))
	return cli.ExitError
}

// oneLine joins the lines of err (errors.Join's, one per module) so the
// whole error is the last line the termination message ends with.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// config reads the worker config file. Without a kernelVersion it is the
// running kernel's, as KMM's worker (modprobe) loads for it.
func (j *workerJob) config() (*v1beta1.ModuleConfig, error) {
	data, err := bounded.ReadFile(j.env.path(j.configFile), maxConfigFile)
	if err != nil {
		return nil, err
	}
	cfg, err := v1beta1.DecodeModuleConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", j.configFile, err)
	}
	if cfg.KernelVersion == "" {
		if cfg.KernelVersion, err = j.env.kernel().Release(); err != nil {
			return nil, fmt.Errorf("%s has no kernelVersion: %w", j.configFile, err)
		}
		j.log.Info("the worker config has no kernelVersion; using the running kernel's", "kernelVersion", cfg.KernelVersion)
	}
	return cfg, nil
}

// run loads or unloads cfg from the image content at root.
func (j *workerJob) run(ctx context.Context, cfg *v1beta1.ModuleConfig, root string, stdout, stderr io.Writer) int {
	w, err := node.NewWorker(j.env.kernel(), append(j.worker, node.WithLogger(j.log))...)
	if err != nil {
		return j.fail(stderr, err)
	}
	var res *node.Result
	if j.action == "load" {
		res, err = w.Load(ctx, cfg, root)
	} else {
		res, err = w.Unload(ctx, cfg, root)
	}
	if err != nil {
		return j.fail(stderr, err)
	}
	line := fmt.Sprintf("%sed: %s; unchanged: %s", j.action, strings.Join(res.Changed, ","), strings.Join(res.Skipped, ","))
	if res.SrcVersion != "" {
		line += "; srcversion: " + res.SrcVersion // the build the kernel runs
	}
	fmt.Fprintln(stdout, line)
	return cli.ExitOK
}

// pullImage extracts the config's image (modules and firmware only) into
// dir and returns it.
func pullImage(ctx context.Context, cfg *v1beta1.ModuleConfig, dir, dockerConfig, caFile string, log logr.Logger) (string, error) {
	var opts []registry.Option
	if caFile != "" {
		pem, err := bounded.ReadFile(caFile, maxCAFile)
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

// Bounds of the files the worker reads whole.
const (
	maxDockerConfig = 1 << 20
	maxConfigFile   = 1 << 20
	maxCAFile       = 4 << 20
)

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
	data, err := bounded.ReadFile(file, maxDockerConfig)
	if err != nil {
		return "", nil, fmt.Errorf("pull secret: %w", err)
	}
	return file, data, nil
}
