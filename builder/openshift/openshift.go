// Package openshift builds kmod images with OpenShift builds
// (build.openshift.io/v1 Build, Docker strategy), as KMM's OpenShift
// edition creates them: the Dockerfile inline, build args as strategy
// environment, build secrets as build volumes at /run/secrets/<name>, the
// image repo secret as pull and push secret, the builder service account
// and the cluster's trusted CA.
//
// Status comes from the Build's phase; the pushed digest from
// status.output.to.imageDigest and a failure's log tail from
// status.logSnippet. Unlike KMM, the hash covers the build args and
// secrets (not only the Dockerfile), failures are retried a bounded number
// of times, and successful Builds are collected after a delay.
//
// Registry TLS options have no per-build flag in OpenShift: insecure
// registries are configured cluster-wide (image.config.openshift.io).
// WithPublish lints a Build's image before it is published at the
// Module's image (package builder/publish).
package openshift

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	buildv1 "github.com/openshift/api/build/v1"
	buildclient "github.com/openshift/client-go/build/clientset/versioned"
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

// LabelBuildType is the label KMM's OpenShift edition puts on Builds (of
// the default identity only: another identity's Builds carry none of
// KMM's keys).
const LabelBuildType = "kmm.openshift.io/build.type"

// Option configures a Builder (see New). Options only record a value;
// New checks them.
type Option func(*options)

type options struct {
	serviceAccount string
	retry          builder.RetryPolicy
	gcDelay        time.Duration
	log            ctxlog.Logger
	clock          clock.PassiveClock
	secrets        kubernetes.Interface
	publish        *registry.Client
	lint           []lint.Option
}

// WithServiceAccount sets the service account that runs the builds
// (default "builder", as KMM's OpenShift edition).
func WithServiceAccount(name string) Option { return func(o *options) { o.serviceAccount = name } }

// WithRetryPolicy bounds retries of failed builds (default: the zero
// builder.RetryPolicy, 3 attempts).
func WithRetryPolicy(p builder.RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithGCDelay keeps a successful Build this long before it is deleted
// (default 0). New refuses a negative delay.
func WithGCDelay(d time.Duration) Option { return func(o *options) { o.gcDelay = d } }

// WithLogger makes the Builder log its progress to l. Without it, each
// Sync logs to the logger of its context (logr.FromContextOrDiscard).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// WithClock sets the clock that retry backoff and the GC delay are read
// from (default the real one).
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithSecrets reads the build secrets' resource versions through cs, so
// that a changed secret rebuilds, and a missing one is reported as
// reason.MissingSecret before a Build is made. Without it, secrets are
// not read (the Build names them all the same).
func WithSecrets(cs kubernetes.Interface) Option { return func(o *options) { o.secrets = cs } }

// WithPublish makes Builds push to a staging tag (publish.StagingTag)
// and the Builder, once a Build completed, lint the pushed image for the
// kernel through c and tag it at the request's image only when it would
// load (package builder/publish); findings fail the build, finally, with
// reason.ImageLintFailed. The pull secret is read through WithSecrets'
// clientset, which it then needs. Without it, Builds push to the
// request's image unlinted, as KMM's do.
func WithPublish(c *registry.Client, opts ...lint.Option) Option {
	return func(o *options) { o.publish, o.lint = c, append(o.lint, opts...) }
}

// Builder is the OpenShift Build backend.
type Builder struct {
	client    buildclient.Interface
	o         options
	publisher *publish.Publisher
}

var _ builder.Builder = (*Builder)(nil)

// New returns a builder that creates Builds through client. It fails
// without a client, and on an option New cannot use (the option is
// named).
func New(client buildclient.Interface, opts ...Option) (*Builder, error) {
	if client == nil {
		return nil, errors.New("openshift: New needs a build.openshift.io clientset")
	}
	o := options{serviceAccount: "builder", clock: clock.RealClock{}}
	for _, f := range opts {
		f(&o)
	}
	if o.serviceAccount == "" {
		return nil, errors.New(`openshift: WithServiceAccount(""): name a service account (the default is "builder")`)
	}
	if o.gcDelay < 0 {
		return nil, fmt.Errorf("openshift: WithGCDelay(%v): the delay must not be negative", o.gcDelay)
	}
	if o.clock == nil {
		return nil, errors.New("openshift: WithClock(nil): no clock")
	}
	b := &Builder{client: client, o: o}
	if o.publish != nil {
		pub, err := publish.New(o.publish, publish.WithLint(o.lint...))
		if err != nil {
			return nil, err
		}
		b.publisher = pub
	}
	return b, nil
}

// Sync implements builder.Builder.
func (b *Builder) Sync(ctx context.Context, req builder.Request) (builder.Status, error) {
	if err := builder.FillSecretVersions(ctx, b.o.secrets, &req); err != nil {
		return builder.Status{Phase: builder.PhaseFailed, Reason: reason.MissingSecret, Message: err.Error()}, err
	}
	var s lifecycle.Store = store{b}
	if b.publisher != nil {
		s = publishingStore{store{b}}
	}
	return lifecycle.Sync(ctx, s, req, lifecycle.Options{Retry: b.o.retry, GCDelay: b.o.gcDelay, Clock: b.o.clock, Log: b.o.log.From(ctx)})
}

// Build returns the Build object of an attempt of req.
func (b *Builder) Build(req builder.Request, attempt int) *buildv1.Build {
	var env []corev1.EnvVar
	for _, a := range req.Args() {
		env = append(env, corev1.EnvVar{Name: a.Name, Value: a.Value})
	}
	secrets := append([]corev1.LocalObjectReference(nil), req.Secrets...)
	sort.SliceStable(secrets, func(i, j int) bool { return secrets[i].Name < secrets[j].Name })
	var volumes []buildv1.BuildVolume
	seen := map[string]bool{}
	for _, s := range secrets {
		if seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		volumes = append(volumes, buildv1.BuildVolume{
			Name: "secret-" + s.Name,
			Source: buildv1.BuildVolumeSource{Type: buildv1.BuildVolumeSourceTypeSecret,
				Secret: &corev1.SecretVolumeSource{SecretName: s.Name, Optional: ptr.To(false)}},
			Mounts: []buildv1.BuildVolumeMount{{DestinationPath: "/run/secrets/" + s.Name}},
		})
	}
	var pull *corev1.LocalObjectReference
	if req.PullSecret != nil && req.PullSecret.Name != "" {
		pull = &corev1.LocalObjectReference{Name: req.PullSecret.Name}
	}
	lbl := builder.Labels(req)
	if req.Identity.IsKMM() {
		lbl[LabelBuildType] = builder.ResourceBuild
	}
	lbl[builder.LabelAttempt] = strconv.Itoa(attempt)
	dockerfile := req.Dockerfile
	output := req.Image
	if b.publisher != nil {
		if staging, err := publish.StagingTag(req.Image); err == nil {
			output = staging
		}
	}
	bld := &buildv1.Build{
		TypeMeta: metav1.TypeMeta{APIVersion: "build.openshift.io/v1", Kind: "Build"},
		ObjectMeta: metav1.ObjectMeta{
			Name: req.Name(attempt), Namespace: req.Namespace, Labels: lbl,
			Annotations: map[string]string{builder.AnnotationHash: req.Hash()},
		},
		Spec: buildv1.BuildSpec{CommonSpec: buildv1.CommonSpec{
			ServiceAccount: b.o.serviceAccount,
			Source:         buildv1.BuildSource{Type: buildv1.BuildSourceDockerfile, Dockerfile: &dockerfile},
			Strategy: buildv1.BuildStrategy{Type: buildv1.DockerBuildStrategyType, DockerStrategy: &buildv1.DockerBuildStrategy{
				BuildArgs: env, Volumes: volumes, PullSecret: pull,
			}},
			Output:         buildv1.BuildOutput{To: &corev1.ObjectReference{Kind: "DockerImage", Name: output}, PushSecret: pull},
			NodeSelector:   buildv1.OptionalNodeSelector(req.NodeSelector),
			MountTrustedCA: ptr.To(true),
		}},
	}
	if req.Owner != nil {
		bld.OwnerReferences = []metav1.OwnerReference{*req.Owner}
	}
	return bld
}

type store struct{ b *Builder }

// publishingStore is the store of a Builder WithPublish: it publishes
// completed Builds (lifecycle.Publisher).
type publishingStore struct{ store }

// Publish implements lifecycle.Publisher.
func (s publishingStore) Publish(ctx context.Context, req builder.Request, obj lifecycle.Object) (string, error) {
	var auth registry.AuthInfo
	if req.PullSecret != nil && req.PullSecret.Name != "" {
		if s.b.o.secrets == nil {
			return "", fmt.Errorf("openshift: reading pull secret %s/%s to publish the built image needs WithSecrets", req.Namespace, req.PullSecret.Name)
		}
		var err error
		if auth, err = pullsecret.Keychain(ctx, s.b.o.secrets, req.Namespace, req.PullSecret.Name); err != nil {
			return "", err
		}
	}
	return s.b.publisher.Publish(ctx, req, auth, fmt.Sprintf("%s/%s/%s@%s", req.Namespace, obj.Name, obj.Hash, obj.Created.UTC().Format(time.RFC3339Nano)))
}

func (s store) List(ctx context.Context, req builder.Request) ([]lifecycle.Object, error) {
	sel := labels.Set(builder.Selector(req))
	if req.Identity.IsKMM() {
		// KMM's OpenShift edition marks the type with its own key.
		delete(sel, builder.LabelResourceType)
		sel[LabelBuildType] = builder.ResourceBuild
	}
	list, err := s.b.client.BuildV1().Builds(req.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	out := make([]lifecycle.Object, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, object(&list.Items[i]))
	}
	return out, nil
}

// object maps a Build's status: New, Pending and Running are in
// progress, Complete succeeded, and Failed, Error and Cancelled failed.
func object(b *buildv1.Build) lifecycle.Object {
	attempt, _ := strconv.Atoi(b.Labels[builder.LabelAttempt])
	o := lifecycle.Object{Name: b.Name, Hash: b.Annotations[builder.AnnotationHash], Attempt: max(attempt, 1),
		Created: b.CreationTimestamp.Time, Deleting: b.DeletionTimestamp != nil}
	if b.Status.CompletionTimestamp != nil {
		o.Finished = b.Status.CompletionTimestamp.Time
	}
	switch b.Status.Phase {
	case buildv1.BuildPhaseComplete:
		o.Phase = builder.PhaseSucceeded
		if b.Status.Output.To != nil {
			o.Digest = b.Status.Output.To.ImageDigest
		}
	case buildv1.BuildPhaseFailed, buildv1.BuildPhaseError, buildv1.BuildPhaseCancelled:
		o.Phase = builder.PhaseFailed
		o.Reason = reason.BuildFailed // the message names the phase: Failed, Error or Cancelled
		o.Message = fmt.Sprintf("build %s: %s", b.Name, b.Status.Phase)
		if b.Status.Reason != "" || b.Status.Message != "" {
			o.Message += fmt.Sprintf(": %s %s", b.Status.Reason, b.Status.Message)
		}
		o.LogTail = b.Status.LogSnippet
	case buildv1.BuildPhaseRunning:
		o.Phase = builder.PhaseRunning
	default:
		o.Phase = builder.PhasePending
	}
	return o
}

func (s store) Create(ctx context.Context, req builder.Request, name string, attempt int) error {
	_, err := s.b.client.BuildV1().Builds(req.Namespace).Create(ctx, s.b.Build(req, attempt), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return lifecycle.ErrExists
	}
	return err
}

func (s store) Delete(ctx context.Context, req builder.Request, name string) error {
	err := s.b.client.BuildV1().Builds(req.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting build %s/%s: %w", req.Namespace, name, err)
	}
	return nil
}
