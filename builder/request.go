package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// DockerfileKey is the ConfigMap key that holds the Dockerfile, as in KMM.
const DockerfileKey = "dockerfile"

// Request is one image to build: a Module's build for one kernel.
type Request struct {
	// Namespace and Module name the Module. In-cluster builds run in
	// Namespace and are named after Module.
	Namespace, Module string
	// Kernel is the kernel the image is for.
	Kernel kernelmap.Kernel
	// Image is where the built image is pushed.
	Image string
	// Dockerfile is the Dockerfile text (the ConfigMap's "dockerfile" key).
	Dockerfile string
	// BuildArgs are the user's build args; Args adds the injected ones.
	BuildArgs []v1beta1.BuildArg
	// Secrets are mounted at /run/secrets/<name> during the build.
	Secrets []corev1.LocalObjectReference
	// SecretVersions maps a secret name to a version (its resourceVersion,
	// or a content hash), so a changed secret changes the Hash.
	SecretVersions map[string]string
	// BaseImageRegistryTLS applies to pulling the base images.
	BaseImageRegistryTLS v1beta1.TLSOptions
	// RegistryTLS applies to the push.
	RegistryTLS v1beta1.TLSOptions
	// PullSecret is a kubernetes.io/dockerconfigjson secret used for both
	// pulls and the push (KMM's imageRepoSecret).
	PullSecret *corev1.LocalObjectReference
	// NodeSelector and Tolerations place in-cluster builds.
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// KanikoParams choose the Kaniko image tag.
	KanikoParams *v1beta1.KanikoParams
	// DTKImage is the Driver Toolkit image for Kernel; it becomes the
	// DTK_AUTO build arg when the Dockerfile mentions DTK_AUTO. See
	// ResolveDTK.
	DTKImage string
	// Owner, when set, owns in-cluster build objects.
	Owner *metav1.OwnerReference
	// Identity is the owner's kind and label domain, which names build
	// objects and their labels (see package identity); the zero value is
	// KMM's Module. In-cluster builds of an owner whose identity is not
	// KMM's never share a name or a label with KMM's or another
	// operator's.
	Identity identity.Domain
	// DirName and FirmwarePath are the Module's modprobe.dirName and
	// modprobe.firmwarePath, for backends that lay out the image
	// themselves (the assembler).
	DirName, FirmwarePath string
	// Modules are the modules the image must hold (the Module's
	// moduleName and modulesLoadingOrder), which the lint of a built
	// image checks (package builder/publish).
	Modules []string
}

// NewRequest returns the build request of a resolved per-kernel record.
// dockerfile is the text of the record's build.dockerfileConfigMap key
// "dockerfile" (see DockerfileFromConfigMap). The record must have a build.
func NewRequest(rec *kernelmap.Record, dockerfile string) (Request, error) {
	b := rec.Build()
	if b == nil {
		return Request{}, fmt.Errorf("module %s/%s has no build for kernel %s", rec.Namespace(), rec.ModuleName(), rec.Kernel().Version)
	}
	r := Request{
		Namespace: rec.Namespace(), Module: rec.ModuleName(), Kernel: rec.Kernel(), Image: rec.Image(),
		Dockerfile: dockerfile, BuildArgs: b.BuildArgs, Secrets: b.Secrets,
		BaseImageRegistryTLS: b.BaseImageRegistryTLS, RegistryTLS: rec.RegistryTLS(),
		PullSecret: rec.ImageRepoSecret(), NodeSelector: b.Selector, Tolerations: rec.Tolerations(),
		KanikoParams: b.KanikoParams,
		DirName:      rec.Modprobe().DirName, FirmwarePath: rec.Modprobe().FirmwarePath,
	}
	if len(r.NodeSelector) == 0 {
		r.NodeSelector = rec.Selector()
	}
	if mp := rec.Modprobe(); mp.RawArgs == nil && mp.ModuleName != "" {
		r.Modules = append(r.Modules, mp.ModuleName)
	}
	r.Modules = append(r.Modules, rec.Modprobe().ModulesLoadingOrder...)
	return r, r.Validate()
}

// DockerfileFromConfigMap returns the Dockerfile a build ConfigMap holds,
// or an error naming the ConfigMap when the key is missing or empty.
func DockerfileFromConfigMap(cm *corev1.ConfigMap) (string, error) {
	d, ok := cm.Data[DockerfileKey]
	if !ok || strings.TrimSpace(d) == "" {
		return "", fmt.Errorf("configmap %s/%s: key %q is missing or empty", cm.Namespace, cm.Name, DockerfileKey)
	}
	return d, nil
}

// Validate reports what makes the request unusable, naming the field.
// Backends that build from a Dockerfile also call ValidateDockerfile.
func (r Request) Validate() error {
	var errs []error
	if r.Namespace == "" {
		errs = append(errs, errors.New("namespace is empty"))
	}
	if r.Module == "" {
		errs = append(errs, errors.New("module name is empty"))
	}
	if err := r.Identity.Validate(); err != nil {
		errs = append(errs, err)
	}
	if r.Kernel.Version == "" {
		errs = append(errs, errors.New("kernel is empty"))
	}
	if r.Image == "" {
		errs = append(errs, errors.New("image is empty"))
	}
	for i, a := range r.BuildArgs {
		if a.Name == "" {
			errs = append(errs, fmt.Errorf("buildArgs[%d].name is empty", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("build request for %s/%s: %w", r.Namespace, r.Module, err)
	}
	return nil
}

// ValidateDockerfile reports a missing Dockerfile.
func (r Request) ValidateDockerfile() error {
	if strings.TrimSpace(r.Dockerfile) == "" {
		return fmt.Errorf("build request for %s/%s: dockerfile is empty (configmap key %q)", r.Namespace, r.Module, DockerfileKey)
	}
	return nil
}

// FillSecretVersions sets req.SecretVersions, when unset, from the
// resource versions of the build secrets, so that a changed secret
// changes the Hash and rebuilds. A missing secret is an error naming it.
func FillSecretVersions(ctx context.Context, client kubernetes.Interface, req *Request) error {
	if req.SecretVersions != nil || len(req.Secrets) == 0 || client == nil {
		return nil
	}
	versions := map[string]string{}
	for _, s := range req.Secrets {
		sec, err := client.CoreV1().Secrets(req.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("build secret %s/%s: %w", req.Namespace, s.Name, err)
		}
		versions[s.Name] = sec.ResourceVersion
	}
	req.SecretVersions = versions
	return nil
}

// Injected build args, set on every build and overriding the user's.
const (
	ArgKernelVersion     = "KERNEL_VERSION"
	ArgKernelFullVersion = "KERNEL_FULL_VERSION"
	ArgModName           = "MOD_NAME"
	ArgModNamespace      = "MOD_NAMESPACE"
	ArgKernelXYZ         = "KERNEL_XYZ"
	ArgKernelX           = "KERNEL_X"
	ArgKernelY           = "KERNEL_Y"
	ArgKernelZ           = "KERNEL_Z"
	ArgDTKAuto           = "DTK_AUTO"
)

// Args returns the build args: the user's, with the injected ones
// replacing same-named user args in place and the others appended in
// sorted order, as KMM merges them. kmmkit also injects KERNEL_XYZ,
// KERNEL_X, KERNEL_Y and KERNEL_Z, and DTK_AUTO when the Dockerfile
// mentions it and DTKImage is set.
func (r Request) Args() []v1beta1.BuildArg {
	inj := []v1beta1.BuildArg{
		{Name: ArgKernelFullVersion, Value: r.Kernel.Version},
		{Name: ArgKernelVersion, Value: r.Kernel.Version},
		{Name: ArgKernelX, Value: r.Kernel.X},
		{Name: ArgKernelXYZ, Value: r.Kernel.XYZ()},
		{Name: ArgKernelY, Value: r.Kernel.Y},
		{Name: ArgKernelZ, Value: r.Kernel.Z},
		{Name: ArgModName, Value: r.Module},
		{Name: ArgModNamespace, Value: r.Namespace},
	}
	if r.DTKImage != "" && strings.Contains(r.Dockerfile, ArgDTKAuto) {
		inj = append(inj, v1beta1.BuildArg{Name: ArgDTKAuto, Value: r.DTKImage})
	}
	sort.Slice(inj, func(i, j int) bool { return inj[i].Name < inj[j].Name })
	return kernelmap.MergeBuildArgs(r.BuildArgs, inj)
}

// DTKResolver finds the Driver Toolkit image of a kernel (OpenShift).
type DTKResolver interface {
	DTKImage(ctx context.Context, kernel string) (string, error)
}

// ResolveDTK sets DTKImage through res when the Dockerfile mentions
// DTK_AUTO; it does nothing otherwise.
func (r *Request) ResolveDTK(ctx context.Context, res DTKResolver) error {
	if res == nil || !strings.Contains(r.Dockerfile, ArgDTKAuto) {
		return nil
	}
	img, err := res.DTKImage(ctx, r.Kernel.Version)
	if err != nil {
		return fmt.Errorf("finding the Driver Toolkit image for kernel %s (the Dockerfile uses %s): %w", r.Kernel.Version, ArgDTKAuto, err)
	}
	r.DTKImage = img
	return nil
}

// Hash identifies the build's output: it changes when anything that
// changes the built image or where it goes changes (Dockerfile, args,
// secrets and their versions, TLS options, target, placement). Builds are
// replaced when their hash differs from the request's.
func (r Request) Hash() string {
	secrets := make([]string, 0, len(r.Secrets))
	for _, s := range r.Secrets {
		secrets = append(secrets, s.Name+"@"+r.SecretVersions[s.Name])
	}
	sort.Strings(secrets)
	var pull string
	if r.PullSecret != nil {
		pull = r.PullSecret.Name
	}
	h := struct {
		Image, Dockerfile, Pull string
		Args                    []v1beta1.BuildArg
		Secrets                 []string
		Base, Push              v1beta1.TLSOptions
		Selector                map[string]string
		Tolerations             []corev1.Toleration
		Kaniko                  *v1beta1.KanikoParams
	}{r.Image, r.Dockerfile, pull, r.Args(), secrets, r.BaseImageRegistryTLS, r.RegistryTLS, r.NodeSelector, r.Tolerations, r.KanikoParams}
	raw, _ := json.Marshal(h) // plain data: cannot fail
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// Name is the deterministic name of the build object: KMM's
// <module>-build-<kernel as DNS label>, with -<attempt> from the second
// attempt on, for the default identity (identity.Owner.BuildName).
func (r Request) Name(attempt int) string {
	return r.owner().BuildName(r.Kernel.DNSName(), attempt)
}

// owner is the identity of the request's owner. Builds run in its
// namespace (for a cluster-scoped owner, the one its Pods run in), so the
// namespace plays no part in build names and labels.
func (r Request) owner() identity.Owner { return r.Identity.Owner(r.Namespace, r.Module) }
