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
// the running build. Never run the Kaniko executor outside a container:
// it takes over the root filesystem it runs on.
package kaniko

import (
	"context"
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
	"k8s.io/utils/ptr"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/internal/lifecycle"
	"github.com/kmmkit/kmmkit/reason"
)

// DefaultImage is the Kaniko executor image used when Options.Image is
// empty.
const DefaultImage = "gcr.io/kaniko-project/executor:v1.23.2"

// AnnotationDockerfile carries the Dockerfile into the Pod (downward API).
const AnnotationDockerfile = "kmm.node.kubernetes.io/dockerfile"

// Options configure the Kaniko builder.
type Options struct {
	// Image is the Kaniko executor image; "" means DefaultImage.
	Image string
	// Resources of the build container; nil sets none (as KMM).
	Resources *corev1.ResourceRequirements
	// ServiceAccountName of build Pods; "" means the namespace default.
	ServiceAccountName string
	// Retry bounds retries of failed builds.
	Retry builder.RetryPolicy
	// GCDelay keeps a successful build Pod this long (KMM's job.gcDelay).
	GCDelay time.Duration
	// Log receives progress.
	Log logr.Logger
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Builder is the Kaniko builder.
type Builder struct {
	client kubernetes.Interface
	o      Options
}

var _ builder.Builder = (*Builder)(nil)

// New returns a Kaniko builder that creates Pods through client.
func New(client kubernetes.Interface, o Options) *Builder {
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.Log.GetSink() == nil {
		o.Log = logr.Discard()
	}
	return &Builder{client: client, o: o}
}

// Sync implements builder.Builder.
func (b *Builder) Sync(ctx context.Context, req builder.Request) (builder.Status, error) {
	if err := builder.FillSecretVersions(ctx, b.client, &req); err != nil {
		return builder.Status{Phase: builder.PhaseFailed, Reason: reason.MissingSecret, Message: err.Error()}, err
	}
	return lifecycle.Sync(ctx, store{b}, req, lifecycle.Options{Retry: b.o.Retry, GCDelay: b.o.GCDelay, Now: b.o.Now, Log: b.o.Log})
}

// ExecutorImage returns the Kaniko image for req: Options.Image with its
// tag replaced by kanikoParams.tag when set. Unlike KMM, a registry port
// in the image is kept.
func (b *Builder) ExecutorImage(req builder.Request) (string, error) {
	if req.KanikoParams == nil || req.KanikoParams.Tag == "" {
		return b.o.Image, nil
	}
	ref, err := name.ParseReference(b.o.Image)
	if err != nil {
		return "", fmt.Errorf("kaniko image %q: %w", b.o.Image, err)
	}
	repo := ref.Context().String()
	if !strings.HasPrefix(b.o.Image, ref.Context().RegistryStr()) {
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
	args := []string{"--destination", req.Image}
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
	if b.o.Resources != nil {
		c.Resources = *b.o.Resources
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
			ServiceAccountName:           b.o.ServiceAccountName,
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
type store struct{ b *Builder }

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
		s.b.o.Log.Info("created build pod", "pod", name, "attempt", attempt)
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
