// Package kaniko builds kmod images in the cluster with a Kaniko Pod,
// shaped as KMM creates it: name <module>-build-<kernel>, KMM's labels,
// the Dockerfile at /workspace, build secrets at /run/secrets/<name>, the
// pull secret at /kaniko/.docker/config.json, and KMM's flags
// (--destination, --insecure, --skip-tls-verify, --insecure-pull,
// --skip-tls-verify-pull, --build-arg).
//
// It fixes KMM's Kaniko bugs: kanikoParams.tag works with registry ports,
// resources are configurable, the pushed digest is reported (Kaniko writes
// it to the termination log), failures carry the log tail, failed builds
// are retried a bounded number of times, and a changed request replaces
// the running build. Unlike KMM's, the Pod pushes to a staging tag
// (publish.StagingTag): once it succeeded the Builder lints the pushed
// image for the kernel and tags it at the Module's image only when it
// would load; otherwise the build fails with reason.ImageLintFailed and
// the findings, and is not retried. Never run the Kaniko executor outside a container:
// it takes over the root filesystem it runs on.
package kaniko

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/internal/lifecycle"
	"github.com/kmmkit/kmmkit/builder/publish"
	"github.com/kmmkit/kmmkit/internal/ctxlog"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
)

// DefaultImage is the Kaniko executor image used unless WithImage says
// otherwise.
const DefaultImage = "gcr.io/kaniko-project/executor:v1.23.2"

// AnnotationDockerfile carries the Dockerfile into the Pod (downward API).
const AnnotationDockerfile = "kmm.node.kubernetes.io/dockerfile"

// Option configures a Builder (see New). Options only record a value;
// New checks them.
type Option func(*options)

type options struct {
	image          string
	resources      *corev1.ResourceRequirements
	serviceAccount string
	retry          builder.RetryPolicy
	gcDelay        time.Duration
	log            ctxlog.Logger
	clock          clock.PassiveClock
	registry       *registry.Client
	lint           []lint.Option
}

// WithImage sets the Kaniko executor image (default DefaultImage); a
// Module's kanikoParams.tag replaces its tag. New refuses an image that
// is not a valid reference.
func WithImage(image string) Option { return func(o *options) { o.image = image } }

// WithResources sets the resources of the build container (default none,
// as KMM).
func WithResources(r corev1.ResourceRequirements) Option {
	return func(o *options) { o.resources = r.DeepCopy() }
}

// WithServiceAccount sets the service account of build Pods (default
// the namespace's default).
func WithServiceAccount(name string) Option { return func(o *options) { o.serviceAccount = name } }

// WithRetryPolicy bounds retries of failed builds (default: the zero
// builder.RetryPolicy, 3 attempts).
func WithRetryPolicy(p builder.RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithGCDelay keeps a successful build Pod this long before it is
// deleted (KMM's job.gcDelay; default 0). New refuses a negative delay.
func WithGCDelay(d time.Duration) Option { return func(o *options) { o.gcDelay = d } }

// WithLogger makes the Builder log its progress to l. Without it, each
// Sync logs to the logger of its context (logr.FromContextOrDiscard).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// WithClock sets the clock that retry backoff and the GC delay are read
// from (default the real one).
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithRegistry gives the registry client that pulls a built image to
// lint it and tags it at the request's image (package builder/publish);
// without it, New makes one with the system's CA certificates.
func WithRegistry(c *registry.Client) Option { return func(o *options) { o.registry = c } }

// WithLint adds lint options (lint.WithKernelTree, lint.WithHostModules,
// …) to those every build's lint takes from its request: its dirName,
// firmware path and modules.
func WithLint(opts ...lint.Option) Option {
	return func(o *options) { o.lint = append(o.lint, opts...) }
}

// Builder is the Kaniko builder.
type Builder struct {
	client    kubernetes.Interface
	o         options
	publisher *publish.Publisher
}

var _ builder.Builder = (*Builder)(nil)

// New returns a Kaniko builder that creates Pods through client. It
// fails without a client, and on an option New cannot use (the option is
// named).
func New(client kubernetes.Interface, opts ...Option) (*Builder, error) {
	if client == nil {
		return nil, errors.New("kaniko: New needs a clientset")
	}
	o := options{image: DefaultImage, clock: clock.RealClock{}}
	for _, f := range opts {
		f(&o)
	}
	if _, err := name.ParseReference(o.image); err != nil {
		return nil, fmt.Errorf("kaniko: WithImage(%q): %w", o.image, err)
	}
	if o.gcDelay < 0 {
		return nil, fmt.Errorf("kaniko: WithGCDelay(%v): the delay must not be negative", o.gcDelay)
	}
	if o.clock == nil {
		return nil, errors.New("kaniko: WithClock(nil): no clock")
	}
	if o.registry == nil {
		c, err := registry.NewClient()
		if err != nil {
			return nil, fmt.Errorf("kaniko: registry client: %w", err)
		}
		o.registry = c
	}
	pub, err := publish.New(o.registry, publish.WithLint(o.lint...))
	if err != nil {
		return nil, err
	}
	return &Builder{client: client, o: o, publisher: pub}, nil
}

// Sync implements builder.Builder.
func (b *Builder) Sync(ctx context.Context, req builder.Request) (builder.Status, error) {
	if err := builder.FillSecretVersions(ctx, b.client, &req); err != nil {
		return builder.Status{Phase: builder.PhaseFailed, Reason: reason.MissingSecret, Message: err.Error()}, err
	}
	log := b.o.log.From(ctx)
	return lifecycle.Sync(ctx, store{b, log}, req, lifecycle.Options{Retry: b.o.retry, GCDelay: b.o.gcDelay, Clock: b.o.clock, Log: log})
}

// ExecutorImage returns the Kaniko image for req: WithImage's with its
// tag replaced by kanikoParams.tag when set. Unlike KMM, a registry port
// in the image is kept.
func (b *Builder) ExecutorImage(req builder.Request) (string, error) {
	if req.KanikoParams == nil || req.KanikoParams.Tag == "" {
		return b.o.image, nil
	}
	ref, err := name.ParseReference(b.o.image)
	if err != nil {
		return "", fmt.Errorf("kaniko image %q: %w", b.o.image, err)
	}
	repo := ref.Context().String()
	if !strings.HasPrefix(b.o.image, ref.Context().RegistryStr()) {
		// Keep a short Docker Hub name as the user wrote it.
		repo = ref.Context().RepositoryStr()
	}
	tagged, err := name.NewTag(repo + ":" + req.KanikoParams.Tag)
	if err != nil {
		return "", fmt.Errorf("kanikoParams.tag %q: %w", req.KanikoParams.Tag, err)
	}
	return tagged.String(), nil
}

// Pod returns the build Pod of an attempt of req.
func (b *Builder) Pod(req builder.Request, attempt int) (*corev1.Pod, error) {
	image, err := b.ExecutorImage(req)
	if err != nil {
		return nil, err
	}
	staging, err := publish.StagingTag(req.Image)
	if err != nil {
		return nil, err
	}
	args := []string{"--destination", staging}
	if req.RegistryTLS.Insecure {
		args = append(args, "--insecure")
	}
	if req.RegistryTLS.InsecureSkipTLSVerify {
		args = append(args, "--skip-tls-verify")
	}
	if req.BaseImageRegistryTLS.Insecure {
		args = append(args, "--insecure-pull")
	}
	if req.BaseImageRegistryTLS.InsecureSkipTLSVerify {
		args = append(args, "--skip-tls-verify-pull")
	}
	for _, a := range req.Args() {
		args = append(args, "--build-arg", a.Name+"="+a.Value)
	}
	args = append(args, "--digest-file", "/dev/termination-log")
	volumes := []corev1.Volume{
		{Name: "dockerfile", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "Dockerfile", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + AnnotationDockerfile + "']"}}},
		}}},
		{Name: "lib-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules", Type: ptr.To(corev1.HostPathDirectory)}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "dockerfile", MountPath: "/workspace", ReadOnly: true},
		{Name: "lib-modules", MountPath: "/host/lib/modules", ReadOnly: true},
	}
	secrets := append([]corev1.LocalObjectReference(nil), req.Secrets...)
	sort.SliceStable(secrets, func(i, j int) bool { return secrets[i].Name < secrets[j].Name })
	seen := map[string]bool{}
	for _, s := range secrets {
		if seen[s.Name] {
			continue // KMM mounts a duplicate twice, which the API rejects
		}
		seen[s.Name] = true
		volumes = append(volumes, corev1.Volume{Name: "secret-" + s.Name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: s.Name}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "secret-" + s.Name, MountPath: "/run/secrets/" + s.Name, ReadOnly: true})
	}
	if req.PullSecret != nil && req.PullSecret.Name != "" {
		volumes = append(volumes, corev1.Volume{Name: "pull-secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: req.PullSecret.Name,
			Items:      []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: "config.json"}},
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "pull-secret", MountPath: "/kaniko/.docker", ReadOnly: true})
	}
	c := corev1.Container{
		Name: "kaniko", Image: image, Args: args, VolumeMounts: mounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if b.o.resources != nil {
		c.Resources = *b.o.resources
	}
	lbl := builder.Labels(req)
	lbl[builder.LabelAttempt] = strconv.Itoa(attempt)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: req.Name(attempt), Namespace: req.Namespace, Labels: lbl,
			Annotations: map[string]string{builder.AnnotationHash: req.Hash(), AnnotationDockerfile: req.Dockerfile},
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// Kaniko needs no API access.
			AutomountServiceAccountToken: ptr.To(false),
			NodeSelector:                 req.NodeSelector,
			Tolerations:                  req.Tolerations,
			ServiceAccountName:           b.o.serviceAccount,
			Containers:                   []corev1.Container{c},
			Volumes:                      volumes,
		},
	}
	if req.Owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*req.Owner}
	}
	return pod, nil
}

// store keeps build Pods for the life cycle.
type store struct {
	b   *Builder
	log logr.Logger
}

func (s store) List(ctx context.Context, req builder.Request) ([]lifecycle.Object, error) {
	sel := labels.Set(builder.Selector(req))
	pods, err := s.b.client.CoreV1().Pods(req.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	out := make([]lifecycle.Object, 0, len(pods.Items))
	for i := range pods.Items {
		out = append(out, object(&pods.Items[i]))
	}
	return out, nil
}

func object(p *corev1.Pod) lifecycle.Object {
	attempt, _ := strconv.Atoi(p.Labels[builder.LabelAttempt])
	o := lifecycle.Object{Name: p.Name, Hash: p.Annotations[builder.AnnotationHash], Attempt: max(attempt, 1),
		Created: p.CreationTimestamp.Time, Deleting: p.DeletionTimestamp != nil}
	var term *corev1.ContainerStateTerminated
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == "kaniko" {
			term = cs.State.Terminated
			if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" {
				o.Message = fmt.Sprintf("kaniko container waiting: %s: %s", w.Reason, w.Message)
			}
		}
	}
	if term != nil {
		o.Finished = term.FinishedAt.Time
	}
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		o.Phase = builder.PhaseSucceeded
		if term != nil && strings.HasPrefix(strings.TrimSpace(term.Message), "sha256:") {
			o.Digest = strings.TrimSpace(term.Message)
		}
	case corev1.PodFailed:
		o.Phase, o.Reason = builder.PhaseFailed, reason.BuildFailed
		o.Message = fmt.Sprintf("build pod %s failed", p.Name)
		if term != nil {
			o.Message = fmt.Sprintf("build pod %s failed: kaniko exited with code %d (%s)", p.Name, term.ExitCode, term.Reason)
			o.LogTail = builder.LogTail(term.Message, 20)
		} else if p.Status.Message != "" {
			o.Message += ": " + p.Status.Message
		}
	case corev1.PodRunning:
		o.Phase = builder.PhaseRunning
	default:
		o.Phase = builder.PhasePending
	}
	return o
}

// LogTail reads the last lines of a failed build's log from the kubelet,
// when the termination message did not carry them (lifecycle.LogReader).
// Publish implements lifecycle.Publisher: it lints the image the build
// Pod pushed to the staging tag, with the request's pull secret, and tags
// it at the request's image when it would load.
func (s store) Publish(ctx context.Context, req builder.Request, obj lifecycle.Object) (string, error) {
	var auth registry.AuthInfo
	if req.PullSecret != nil && req.PullSecret.Name != "" {
		var err error
		if auth, err = pullsecret.Keychain(ctx, s.b.client, req.Namespace, req.PullSecret.Name); err != nil {
			return "", err
		}
	}
	return s.b.publisher.Publish(ctx, req, auth, fmt.Sprintf("%s/%s/%s@%s", req.Namespace, obj.Name, obj.Hash, obj.Created.UTC().Format(time.RFC3339Nano)))
}

func (s store) LogTail(ctx context.Context, req builder.Request, name string) string {
	raw, err := s.b.client.CoreV1().Pods(req.Namespace).GetLogs(name, &corev1.PodLogOptions{Container: "kaniko", TailLines: ptr.To[int64](20)}).DoRaw(ctx)
	if err != nil {
		return ""
	}
	return builder.LogTail(string(raw), 20)
}

func (s store) Create(ctx context.Context, req builder.Request, name string, attempt int) error {
	pod, err := s.b.Pod(req, attempt)
	if err != nil {
		return err
	}
	_, err = s.b.client.CoreV1().Pods(req.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return lifecycle.ErrExists
	}
	if err == nil {
		s.log.Info("created build pod", "pod", name, "attempt", attempt)
	}
	return err
}

func (s store) Delete(ctx context.Context, req builder.Request, name string) error {
	err := s.b.client.CoreV1().Pods(req.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting build pod %s/%s: %w", req.Namespace, name, err)
	}
	return nil
}
