package loader

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// Action is what a worker Pod does.
type Action string

// The worker actions, as KMM names them in its labels.
const (
	ActionLoad   Action = "Load"
	ActionUnload Action = "Unload"
)

// Labels and annotations of worker Pods, KMM's keys. The label keys are
// those of the default identity; a worker of another identity carries
// that identity's (identity.Owner.WorkerLabels) and none of KMM's, so
// KMM never takes it for its own. The annotations are the same on every
// worker: they are read only from the Pod that carries them.
const (
	LabelModuleName         = "kmm.node.kubernetes.io/module.name"
	LabelWorkerAction       = "kmm.node.kubernetes.io/worker-action"
	AnnotationWorkerConfig  = "kmm.node.kubernetes.io/worker-config"
	AnnotationTolerations   = "kmm.node.kubernetes.io/worker-tolerations"
	AnnotationModuleVersion = "kmm.node.kubernetes.io/worker-module-version"
	AnnotationWorkerHash    = "kmm.node.kubernetes.io/worker-hash"
	workerConfigDir         = "/etc/kmm-worker"
	pullSecretDir           = "/var/run/kmmkit/pull-secret"
	hostModulesDir          = "/lib/modules"
	imagesDir               = "/var/run/kmmkit/images"
	defaultFirmwareHostPath = "/lib/firmware"
	defaultWorkerBinary     = "/kmm"
	caBundleFile            = "ca-bundle.crt"
)

// PodRequest is one worker Pod to run: a module's config on a node.
type PodRequest struct {
	// Node is the node to run on (the Pod bypasses the scheduler).
	Node string
	// Module and Namespace name the owner (Namespace "" for a
	// cluster-scoped one).
	Module, Namespace string
	// Identity is the owner's kind and label domain (package identity),
	// which names the Pod and its labels; the zero value is KMM's Module.
	Identity identity.Domain
	// PodNamespace is where the Pod runs; "" means Namespace. A
	// cluster-scoped owner needs it.
	PodNamespace string
	// Action is load or unload.
	Action Action
	// Config is what the worker loads.
	Config v1beta1.ModuleConfig
	// ServiceAccountName of the Pod; "" means default.
	ServiceAccountName string
	// ImageRepoSecret is mounted for the worker to pull the kmod image.
	ImageRepoSecret *corev1.LocalObjectReference
	// Tolerations let the Pod run on tainted nodes.
	Tolerations []corev1.Toleration
	// ModuleVersion is the Module's version, for ordered upgrades.
	ModuleVersion string
}

// DefaultSELinuxType is the SELinux type of unprivileged workers unless
// WithSELinuxType says otherwise.
const DefaultSELinuxType = "spc_t"

// WorkerPod returns the one-shot Pod that loads or unloads a module on a
// node, as a PodLoader made with NewPodLoader(client, workerImage,
// opts...) runs it; of opts, those that shape worker Pods count
// (WithWorkerBinary, WithFirmwareHostPath, WithResources, WithRunAsUser,
// WithSELinuxType, WithCABundleConfigMap, WithCABundleSecret). It is
// shaped as KMM's (names, labels, annotations, nodeName, OnFailure) with
// kmmkit's worker: it pulls and extracts the kmod image itself, so there
// is no init container and the image needs no shell; it gets
// CAP_SYS_MODULE only, and is privileged only when it must write the
// firmware search path in sysfs.
func WorkerPod(req PodRequest, workerImage string, opts ...Option) (*corev1.Pod, error) {
	o, err := newOptions(workerImage, opts)
	if err != nil {
		return nil, err
	}
	return workerPod(req, workerImage, o.pod)
}

// workerPod is WorkerPod with checked options.
func workerPod(req PodRequest, workerImage string, opts podOptions) (*corev1.Pod, error) {
	owner := req.Identity.Owner(req.Namespace, req.Module)
	podNS := firstNonEmpty(req.PodNamespace, req.Namespace)
	if req.Node == "" || req.Module == "" || podNS == "" {
		return nil, fmt.Errorf("worker pod needs a node, a module and a namespace")
	}
	if err := owner.Validate(); err != nil {
		return nil, fmt.Errorf("worker pod: %w", err)
	}
	if req.Action != ActionLoad && req.Action != ActionUnload {
		return nil, fmt.Errorf("unknown worker action %q", req.Action)
	}
	if workerImage == "" {
		return nil, fmt.Errorf("no worker image")
	}
	cfgYAML, err := yaml.Marshal(req.Config)
	if err != nil {
		return nil, err
	}
	binary := opts.binary
	if binary == "" {
		binary = defaultWorkerBinary
	}
	fwHost := opts.firmwareHostPath
	if fwHost == "" {
		fwHost = defaultFirmwareHostPath
	}
	firmware := req.Config.Modprobe.FirmwarePath != ""
	action := strings.ToLower(string(req.Action))
	args := []string{"worker", action, "--config", workerConfigDir + "/config.yaml", "--pull-dir", imagesDir, "--firmware-host-path", fwHost}
	if firmware && req.Action == ActionLoad {
		args = append(args, "--set-firmware-class-path")
	}
	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "config.yaml", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + AnnotationWorkerConfig + "']"}}},
		}}},
		{Name: "images", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "config", MountPath: workerConfigDir, ReadOnly: true},
		{Name: "images", MountPath: imagesDir},
	}
	// The host's module trees, read-only: the worker learns the running
	// kernel's vermagic from its in-tree modules, and a rawArgs command
	// without -d loads from them, as KMM's worker mounts them too.
	volumes = append(volumes, corev1.Volume{Name: "host-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
		Path: hostModulesDir, Type: ptr.To(corev1.HostPathDirectory),
	}}})
	mounts = append(mounts, corev1.VolumeMount{Name: "host-modules", MountPath: hostModulesDir, ReadOnly: true},
		// Also where KMM's worker mounts them for images that link
		// <dirName>/lib/modules/<kernel>/host to the node's in-tree
		// modules (KMM's documented way to depend on them).
		corev1.VolumeMount{Name: "host-modules", MountPath: "/host" + hostModulesDir, ReadOnly: true})
	var pullSecrets []corev1.LocalObjectReference
	if req.ImageRepoSecret != nil && req.ImageRepoSecret.Name != "" {
		pullSecrets = []corev1.LocalObjectReference{*req.ImageRepoSecret}
		// The whole secret, so that a kubernetes.io/dockerconfigjson
		// secret (.dockerconfigjson) and a legacy kubernetes.io/dockercfg
		// one (.dockercfg) both arrive; the worker reads whichever is there.
		volumes = append(volumes, corev1.Volume{Name: "pull-secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: req.ImageRepoSecret.Name,
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "pull-secret", MountPath: pullSecretDir, ReadOnly: true})
		args = append(args, "--docker-config", pullSecretDir)
	}
	for _, b := range opts.caBundles {
		// The registry's CA: the worker trusts it besides its built-in
		// roots, for pulls on load and on unload alike.
		items := []corev1.KeyToPath{{Key: b.key, Path: caBundleFile}}
		src := corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: b.name}, Items: items}}
		if b.kind == "Secret" {
			src = corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: b.name, Items: items}}
		}
		volumes = append(volumes, corev1.Volume{Name: "registry-ca", VolumeSource: src})
		mounts = append(mounts, corev1.VolumeMount{Name: "registry-ca", MountPath: WorkerCADir, ReadOnly: true})
		args = append(args, "--ca-file", WorkerCADir+"/"+caBundleFile)
	}
	if firmware {
		volumes = append(volumes, corev1.Volume{Name: "firmware", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: fwHost, Type: ptr.To(corev1.HostPathDirectoryOrCreate),
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "firmware", MountPath: fwHost})
	}
	uid := ptr.To[int64](0)
	if opts.runAsUser != nil {
		uid = ptr.To(*opts.runAsUser)
	}
	sc := &corev1.SecurityContext{
		RunAsUser:      uid,
		Capabilities:   &corev1.Capabilities{Add: []corev1.Capability{"SYS_MODULE"}},
		SELinuxOptions: &corev1.SELinuxOptions{Type: firstNonEmpty(opts.seLinuxType, DefaultSELinuxType)},
	}
	if firmware && req.Action == ActionLoad {
		sc = &corev1.SecurityContext{RunAsUser: uid, Privileged: ptr.To(true)}
	}
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	if opts.resources != nil {
		resources = *opts.resources
	}
	annotations := map[string]string{AnnotationWorkerConfig: string(cfgYAML)}
	if len(req.Tolerations) > 0 {
		t, err := yaml.Marshal(req.Tolerations)
		if err != nil {
			return nil, err
		}
		annotations[AnnotationTolerations] = string(t)
	}
	if req.ModuleVersion != "" {
		annotations[AnnotationModuleVersion] = req.ModuleVersion
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        owner.WorkerPodName(req.Node),
			Namespace:   podNS,
			Labels:      owner.WorkerLabels(string(req.Action)),
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			NodeName:           req.Node,
			RestartPolicy:      corev1.RestartPolicyOnFailure,
			ServiceAccountName: req.ServiceAccountName,
			ImagePullSecrets:   pullSecrets,
			Tolerations:        req.Tolerations,
			Containers: []corev1.Container{{
				Name:            "worker",
				Image:           workerImage,
				Command:         []string{binary},
				Args:            args,
				VolumeMounts:    mounts,
				SecurityContext: sc,
				Resources:       resources,
				// The worker's error becomes the termination message, which
				// the pod loader reports as the reason of a failure.
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: volumes,
		},
	}
	sum := sha256.New()
	specYAML, err := yaml.Marshal(pod.Spec)
	if err != nil {
		return nil, err
	}
	sum.Write(specYAML)
	sum.Write(cfgYAML)
	pod.Annotations[AnnotationWorkerHash] = hex.EncodeToString(sum.Sum(nil))[:16]
	return pod, nil
}

// WorkerPodName returns KMM's worker Pod name, kmm-worker-<node>-<module>,
// cut to 63 characters with a hash suffix when longer, so it stays a valid
// name and label value. Other identities name theirs with
// identity.Owner.WorkerPodName.
func WorkerPodName(node, module string) string {
	return identity.Domain{}.Owner("", module).WorkerPodName(node)
}
