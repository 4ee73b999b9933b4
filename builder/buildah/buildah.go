// Package buildah builds kmod images locally with buildah, where the
// controller or a CI job runs: real Dockerfile builds (multi-stage, build
// args, build secrets at /run/secrets/<name>, base-image and push TLS
// options, credentials), pushed to the target registry with the digest
// reported. A build pushes to a staging tag, lints what it pushed for the
// request's kernel (package builder/publish) and tags it at the
// request's image only when it would load; otherwise it fails with
// reason.ImageLintFailed and the findings, without retries.
//
// By default it drives the buildah command (Debian: apt-get install
// buildah runc), so this package stays free of cgo and of buildah's C
// libraries; github.com/kmmkit/kmmkit/builder/buildahlib, a Go module of
// its own, runs the same builds with buildah as a library instead. The
// defaults (vfs storage, chroot isolation, a private storage root) work
// as root in a container without a daemon. Builds run in the background:
// Sync starts one and reports it until it finishes; a changed request
// cancels the stale build; failures are retried a bounded number of
// times with backoff and keep their log tail.
package buildah

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/publish"
	"github.com/kmmkit/kmmkit/internal/bounded"
	"github.com/kmmkit/kmmkit/internal/ctxlog"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// Option configures a Builder (see New). Options only record a value;
// New checks them.
type Option func(*options)

type options struct {
	binary        string
	root, runRoot string
	storageDriver string
	isolation     string
	certDir       string
	volumes       []string
	auth          func(ctx context.Context, req builder.Request) ([]byte, error)
	secrets       func(ctx context.Context, namespace, name string) (map[string][]byte, error)
	retry         builder.RetryPolicy
	timeout       time.Duration
	log           ctxlog.Logger
	clock         clock.PassiveClock
	runner        Runner
	registry      *registry.Client
	lint          []lint.Option
}

// WithBinary sets the buildah executable (default "buildah" on PATH).
func WithBinary(path string) Option { return func(o *options) { o.binary = path } }

// WithStorage sets buildah's storage directories, its --root and
// --runroot (default private directories under the system temp
// directory).
func WithStorage(root, runRoot string) Option {
	return func(o *options) { o.root, o.runRoot = root, runRoot }
}

// WithStorageDriver sets buildah's storage driver (default "vfs", which
// works in a container without privileges to mount).
func WithStorageDriver(driver string) Option { return func(o *options) { o.storageDriver = driver } }

// WithIsolation sets the isolation of RUN steps: "chroot" (the default),
// "oci" or "rootless"; New refuses others.
func WithIsolation(isolation string) Option { return func(o *options) { o.isolation = isolation } }

// WithCertDir names a directory of CA certificates (*.crt) for
// registries with private CAs, as containers-certs.d holds them.
func WithCertDir(dir string) Option { return func(o *options) { o.certDir = dir } }

// WithVolumes adds bind mounts for every RUN step, as buildah's --volume
// (HOST:CONTAINER[:OPTIONS]); New refuses one without a CONTAINER part.
func WithVolumes(volumes ...string) Option {
	return func(o *options) { o.volumes = append(o.volumes, volumes...) }
}

// WithAuth gives the Docker config JSON with the credentials for pulls
// and the push of a request (from its PullSecret, say). Without it,
// builds pull and push anonymously.
func WithAuth(auth func(ctx context.Context, req builder.Request) ([]byte, error)) Option {
	return func(o *options) { o.auth = auth }
}

// WithSecrets gives the files of a build secret (key → content); they are
// mounted at /run/secrets/<name>/<key> during RUN steps. Without it, a
// build that names secrets fails.
func WithSecrets(secrets func(ctx context.Context, namespace, name string) (map[string][]byte, error)) Option {
	return func(o *options) { o.secrets = secrets }
}

// WithRegistry gives the registry client that pulls a built image to
// lint it and tags it at the request's image (package builder/publish).
// Without it, New makes one that trusts the CA certificates of
// WithCertDir (its *.crt files) besides the system's.
func WithRegistry(c *registry.Client) Option { return func(o *options) { o.registry = c } }

// WithLint adds lint options (lint.WithKernelTree, lint.WithHostModules,
// …) to those every build's lint takes from its request: its dirName,
// firmware path and modules.
func WithLint(opts ...lint.Option) Option {
	return func(o *options) { o.lint = append(o.lint, opts...) }
}

// WithRetryPolicy bounds retries of failed builds (default: the zero
// builder.RetryPolicy, 3 attempts).
func WithRetryPolicy(p builder.RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithTimeout bounds one build and push (default one hour); New refuses
// d <= 0.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithLogger makes the Builder log its progress to l. Without it, a build
// logs to the logger of the context of the Sync that started it
// (logr.FromContextOrDiscard).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// WithClock sets the clock that retry backoff is read from (default the
// real one).
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithRunner replaces the buildah command (WithBinary) with another
// Runner; github.com/kmmkit/kmmkit/builder/buildahlib runs buildah as a
// library.
func WithRunner(r Runner) Option { return func(o *options) { o.runner = r } }

// Builder is the buildah builder. It is safe for concurrent use.
type Builder struct {
	o         options
	mu        sync.Mutex
	jobs      map[string]*job // by target image
	publisher *publish.Publisher
}

var _ builder.Builder = (*Builder)(nil)

type job struct {
	hash     string
	attempt  int
	cancel   context.CancelFunc
	done     bool
	status   builder.Status
	finished time.Time
}

// New returns a buildah builder. It fails on an option it cannot use,
// naming it.
func New(opts ...Option) (*Builder, error) {
	o := options{
		binary: "buildah", storageDriver: "vfs", isolation: "chroot",
		root:    filepath.Join(os.TempDir(), "kmmkit-buildah", "root"),
		runRoot: filepath.Join(os.TempDir(), "kmmkit-buildah", "runroot"),
		timeout: time.Hour, clock: clock.RealClock{},
	}
	for _, f := range opts {
		f(&o)
	}
	switch {
	case o.binary == "" && o.runner == nil:
		return nil, errors.New(`buildah: WithBinary(""): name the buildah executable`)
	case o.root == "" || o.runRoot == "":
		return nil, fmt.Errorf("buildah: WithStorage(%q, %q): both directories are needed", o.root, o.runRoot)
	case o.storageDriver == "":
		return nil, errors.New(`buildah: WithStorageDriver(""): name a storage driver (default "vfs")`)
	case o.isolation != "chroot" && o.isolation != "oci" && o.isolation != "rootless":
		return nil, fmt.Errorf("buildah: WithIsolation(%q): use chroot, oci or rootless", o.isolation)
	case o.timeout <= 0:
		return nil, fmt.Errorf("buildah: WithTimeout(%v): the timeout must be positive", o.timeout)
	case o.clock == nil:
		return nil, errors.New("buildah: WithClock(nil): no clock")
	}
	for _, v := range o.volumes {
		if parts := strings.Split(v, ":"); len(parts) < 2 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("buildah: WithVolumes(%q): a volume is HOST:CONTAINER[:OPTIONS]", v)
		}
	}
	if o.runner == nil {
		o.runner = commandRunner{binary: o.binary}
	}
	if o.registry == nil {
		c, err := defaultRegistry(o.certDir)
		if err != nil {
			return nil, err
		}
		o.registry = c
	}
	pub, err := publish.New(o.registry, publish.WithLint(o.lint...))
	if err != nil {
		return nil, err
	}
	return &Builder{o: o, jobs: map[string]*job{}, publisher: pub}, nil
}

// Sync implements builder.Builder.
func (b *Builder) Sync(ctx context.Context, req builder.Request) (builder.Status, error) {
	if err := errors.Join(req.Validate(), req.ValidateDockerfile()); err != nil {
		return builder.Status{Phase: builder.PhaseFailed, Final: true, Reason: reason.InvalidRequest, Message: err.Error()}, err
	}
	hash := req.Hash()
	log := b.o.log.From(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs[req.Image]
	if j != nil && j.hash != hash {
		log.Info("replacing stale build", "image", req.Image)
		j.cancel()
		j = nil
	}
	if j == nil {
		return b.start(log, req, hash, 1), nil
	}
	if !j.done {
		return j.status, nil
	}
	st := j.status
	if st.Phase != builder.PhaseFailed || st.Final {
		return st, nil
	}
	due := j.finished.Add(b.o.retry.Delay(j.attempt + 1))
	if now := b.o.clock.Now(); now.Before(due) {
		st.RequeueAfter = due.Sub(now)
		return st, nil
	}
	return b.start(log, req, hash, j.attempt+1), nil
}

// start runs a build in the background, logging to log; b.mu is held.
func (b *Builder) start(log logr.Logger, req builder.Request, hash string, attempt int) builder.Status {
	ctx, cancel := context.WithTimeout(logr.NewContext(context.Background(), log), b.o.timeout)
	j := &job{hash: hash, attempt: attempt, cancel: cancel,
		status: builder.Status{Phase: builder.PhaseRunning, Name: req.Name(attempt), Hash: hash, Attempt: attempt}}
	b.jobs[req.Image] = j
	go func() {
		defer cancel()
		digest, logTail, err := b.run(ctx, req)
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.jobs[req.Image] != j {
			return // replaced meanwhile
		}
		j.done, j.finished = true, b.o.clock.Now()
		if reason.Of(err) == reason.ImageLintFailed {
			// The same Dockerfile builds the same image: no retry.
			j.status.Phase, j.status.Reason, j.status.Message, j.status.Final = builder.PhaseFailed, reason.ImageLintFailed, err.Error(), true
			log.Info("built image would not load; not published", "image", req.Image, "error", err.Error())
			return
		}
		if err != nil {
			j.status.Phase, j.status.Reason, j.status.Message, j.status.LogTail = builder.PhaseFailed, reason.BuildFailed, err.Error(), logTail
			if attempt >= b.o.retry.Attempts() {
				j.status.Final = true
				j.status.Message = fmt.Sprintf("%s (attempt %d of %d; no more retries)", err, attempt, b.o.retry.Attempts())
			}
			log.Info("build failed", "image", req.Image, "attempt", attempt, "error", err.Error())
			return
		}
		j.status.Phase, j.status.Digest = builder.PhaseSucceeded, digest
		log.Info("built, linted and pushed", "image", req.Image, "digest", digest)
	}()
	return j.status
}

// Wait blocks until the build of image is no longer running, or ctx ends.
func (b *Builder) Wait(ctx context.Context, image string) error {
	for {
		b.mu.Lock()
		j := b.jobs[image]
		done := j == nil || j.done
		b.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Job is one build, prepared for a Runner: the Dockerfile, the auth file
// and the secrets are on disk, and every option is resolved.
type Job struct {
	// Request is the build request.
	Request builder.Request
	// Dockerfile and ContextDir are paths; the context holds nothing, as
	// in KMM the Dockerfile is the whole input.
	Dockerfile, ContextDir string
	// Args are the build args, injected ones included.
	Args []v1beta1.BuildArg
	// Volumes are bind mounts for RUN steps (HOST:CONTAINER[:OPTIONS]),
	// the build secrets included.
	Volumes []string
	// AuthFile is a containers-auth.json with the credentials, or "".
	AuthFile string
	// PullTLSVerify and PushTLSVerify require HTTPS with verified
	// certificates for base images and for the push.
	PullTLSVerify, PushTLSVerify bool
	// Root, RunRoot, StorageDriver, Isolation and CertDir are the
	// Builder's (WithStorage, WithStorageDriver, WithIsolation,
	// WithCertDir).
	Root, RunRoot, StorageDriver, Isolation, CertDir string
	// IIDFile and DigestFile are where the image ID and the pushed
	// digest may be written.
	IIDFile, DigestFile string
	// Log receives the build's output; it is safe for concurrent writes
	// (a builder.TailBuffer).
	Log io.Writer
}

// Runner builds a Job, pushes the image to Job.Request.Image (the
// staging tag of the request's image, publish.StagingTag) and returns
// the pushed manifest digest; ctx carries the Builder's logger. The
// default runs the buildah command;
// github.com/kmmkit/kmmkit/builder/buildahlib runs buildah as a library.
type Runner interface {
	Run(ctx context.Context, job Job) (digest string, err error)
}

// run prepares a job and hands it to the runner; it returns the digest,
// or the log tail and the error.
func (b *Builder) run(ctx context.Context, req builder.Request) (string, string, error) {
	work, err := os.MkdirTemp("", "kmmkit-buildah-ctx")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(work)
	// A build's output is kept only as far as its tail is shown.
	log := builder.NewTailBuffer(64 << 10)
	staging, err := publish.StagingTag(req.Image)
	if err != nil {
		return "", "", err
	}
	staged := req
	staged.Image = staging
	job := Job{
		Request: staged, Dockerfile: filepath.Join(work, "Dockerfile"), ContextDir: filepath.Join(work, "context"),
		Args: req.Args(), Volumes: append([]string(nil), b.o.volumes...),
		PullTLSVerify: !req.BaseImageRegistryTLS.Insecure && !req.BaseImageRegistryTLS.InsecureSkipTLSVerify,
		PushTLSVerify: !req.RegistryTLS.Insecure && !req.RegistryTLS.InsecureSkipTLSVerify,
		Root:          b.o.root, RunRoot: b.o.runRoot, StorageDriver: b.o.storageDriver, Isolation: b.o.isolation, CertDir: b.o.certDir,
		IIDFile: filepath.Join(work, "iid"), DigestFile: filepath.Join(work, "digest"), Log: log,
	}
	if err := os.WriteFile(job.Dockerfile, []byte(req.Dockerfile), 0o644); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(job.ContextDir, 0o755); err != nil {
		return "", "", err
	}
	var auth registry.AuthInfo
	if b.o.auth != nil {
		cfg, err := b.o.auth(ctx, req)
		if err != nil {
			return "", "", fmt.Errorf("credentials: %w", err)
		}
		if len(cfg) > 0 {
			kc, err := registry.DockerConfigKeychain(cfg)
			if err != nil {
				return "", "", fmt.Errorf("credentials: %w", err)
			}
			auth.Keychain = kc
			if cfg, err = normalizeAuth(cfg); err != nil {
				return "", "", fmt.Errorf("credentials: %w", err)
			}
			job.AuthFile = filepath.Join(work, "auth.json")
			if err := os.WriteFile(job.AuthFile, cfg, 0o600); err != nil {
				return "", "", err
			}
		}
	}
	secrets, err := b.writeSecrets(ctx, req, filepath.Join(work, "secrets"))
	if err != nil {
		return "", "", err
	}
	job.Volumes = append(job.Volumes, secrets...)
	if _, err := b.o.runner.Run(ctx, job); err != nil {
		return "", builder.LogTail(log.String(), 20), err
	}
	// The image is at the staging tag: lint it, and publish it when it
	// would load.
	digest, err := b.publisher.Publish(ctx, req, auth, "")
	if err != nil {
		return "", "", err
	}
	return digest, "", nil
}

// defaultRegistry is the registry client of a Builder without
// WithRegistry: it trusts the CA certificates of certDir too.
func defaultRegistry(certDir string) (*registry.Client, error) {
	var opts []registry.Option
	if certDir != "" {
		files, _ := filepath.Glob(filepath.Join(certDir, "*.crt"))
		var pem []byte
		for _, f := range files {
			data, err := bounded.ReadFile(f, maxCAFile)
			if err != nil {
				return nil, fmt.Errorf("buildah: WithCertDir(%q): %w", certDir, err)
			}
			pem = append(append(pem, data...), '\n')
		}
		if len(pem) > 0 {
			opts = append(opts, registry.WithCABundle(pem))
		}
	}
	c, err := registry.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("buildah: registry client: %w", err)
	}
	return c, nil
}

// maxCAFile bounds a CA certificate file of WithCertDir.
const maxCAFile = 4 << 20

// commandRunner runs the buildah command.
type commandRunner struct {
	binary string
}

func (c commandRunner) Run(ctx context.Context, job Job) (string, error) {
	global := []string{"--root", job.Root, "--runroot", job.RunRoot, "--storage-driver", job.StorageDriver}
	bud := append(append([]string{}, global...), "bud", "--isolation", job.Isolation, "--format", "oci",
		"-f", job.Dockerfile, "--iidfile", job.IIDFile, fmt.Sprintf("--tls-verify=%t", job.PullTLSVerify))
	for _, a := range job.Args {
		bud = append(bud, "--build-arg", a.Name+"="+a.Value)
	}
	for _, v := range job.Volumes {
		bud = append(bud, "--volume", v)
	}
	var auth []string
	if job.CertDir != "" {
		auth = append(auth, "--cert-dir", job.CertDir)
	}
	if job.AuthFile != "" {
		auth = append(auth, "--authfile", job.AuthFile)
	}
	bud = append(append(bud, auth...), job.ContextDir)
	if err := c.exec(ctx, job.Log, bud...); err != nil {
		return "", fmt.Errorf("buildah bud: %w", err)
	}
	iid, err := os.ReadFile(job.IIDFile)
	if err != nil {
		return "", fmt.Errorf("buildah bud wrote no image ID: %w", err)
	}
	id := strings.TrimPrefix(strings.TrimSpace(string(iid)), "sha256:")
	defer func() { _ = c.exec(context.Background(), io.Discard, append(global, "rmi", "-f", id)...) }()
	push := append(append([]string{}, global...), "push", "--digestfile", job.DigestFile, fmt.Sprintf("--tls-verify=%t", job.PushTLSVerify))
	push = append(append(push, auth...), id, "docker://"+job.Request.Image)
	if err := c.exec(ctx, job.Log, push...); err != nil {
		return "", fmt.Errorf("buildah push %s: %w", job.Request.Image, err)
	}
	d, err := os.ReadFile(job.DigestFile)
	if err != nil {
		return "", fmt.Errorf("buildah push wrote no digest: %w", err)
	}
	return strings.TrimSpace(string(d)), nil
}

func (c commandRunner) exec(ctx context.Context, log io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, c.binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	logr.FromContextOrDiscard(ctx).V(1).Info("running", "command", c.binary+" "+strings.Join(args, " "))
	return cmd.Run()
}

// writeSecrets writes each build secret into dir/<name>/<key> and returns
// the --volume arguments that mount them at /run/secrets/<name>.
func (b *Builder) writeSecrets(ctx context.Context, req builder.Request, dir string) ([]string, error) {
	if len(req.Secrets) == 0 {
		return nil, nil
	}
	if b.o.secrets == nil {
		return nil, fmt.Errorf("the build uses secrets %v, but the builder was given no WithSecrets to read them", req.Secrets)
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range req.Secrets {
		if seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		data, err := b.o.secrets(ctx, req.Namespace, s.Name)
		if err != nil {
			return nil, fmt.Errorf("build secret %s/%s: %w", req.Namespace, s.Name, err)
		}
		sd := filepath.Join(dir, s.Name)
		if err := os.MkdirAll(sd, 0o700); err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if strings.ContainsAny(k, "/\\") || k == ".." || k == "." {
				return nil, fmt.Errorf("build secret %s/%s: key %q is not a file name", req.Namespace, s.Name, k)
			}
			if err := os.WriteFile(filepath.Join(sd, k), data[k], 0o600); err != nil {
				return nil, err
			}
		}
		out = append(out, sd+":/run/secrets/"+s.Name+":ro")
	}
	return out, nil
}

// normalizeAuth rewrites a Docker config so that buildah reads it:
// containers/image only reads the "auth" field of an entry, while
// kubernetes.io/dockerconfigjson secrets often hold username and password
// (or use the older top-level form without "auths").
func normalizeAuth(cfg []byte) ([]byte, error) {
	type entry struct {
		Auth     string `json:"auth,omitempty"`
		Username string `json:"username,omitempty"`
		Password string `json:"password,omitempty"`
	}
	var doc struct {
		Auths map[string]entry `json:"auths"`
	}
	if err := json.Unmarshal(cfg, &doc); err != nil {
		return nil, fmt.Errorf("docker config is not JSON: %w", err)
	}
	if doc.Auths == nil {
		var legacy map[string]entry
		if err := json.Unmarshal(cfg, &legacy); err != nil {
			return nil, fmt.Errorf("docker config has no \"auths\": %w", err)
		}
		doc.Auths = legacy
	}
	out := map[string]map[string]string{}
	for host, e := range doc.Auths {
		a := e.Auth
		if a == "" && e.Username != "" {
			a = base64.StdEncoding.EncodeToString([]byte(e.Username + ":" + e.Password))
		}
		out[host] = map[string]string{"auth": a}
	}
	return json.Marshal(map[string]any{"auths": out})
}
