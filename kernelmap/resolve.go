package kernelmap

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/internal/envsubst"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// resolve builds the record of mapping idx for kernel, applying KMM's merge
// rules and substituting the variables.
func resolve(modName, namespace string, spec *v1beta1.ModuleSpec, idx int, kernel Kernel) (*Record, error) {
	container := &spec.ModuleLoader.Container
	mapping := &container.KernelMappings[idx]
	mpath := fmt.Sprintf("spec.moduleLoader.container.kernelMappings[%d]", idx)
	vars := kernel.Vars(modName, namespace)
	expand := func(field, tmpl string) (string, error) {
		out, err := envsubst.Expand(tmpl, func(n string) (string, bool) {
			v, ok := vars[n]
			return v, ok
		})
		if err != nil {
			return "", &FieldError{Field: field, Value: tmpl, Err: err}
		}
		return out, nil
	}

	r := &Record{
		moduleName:     modName,
		namespace:      namespace,
		kernel:         kernel,
		mappingIndex:   idx,
		pullPolicy:     container.ImagePullPolicy,
		modprobe:       *container.Modprobe.DeepCopy(),
		version:        container.Version,
		serviceAccount: spec.ModuleLoader.ServiceAccountName,
		selector:       cloneMap(spec.Selector),
		tolerations:    append(slices.Clone(spec.Tolerations), InternalTolerations()...),
	}
	if r.modprobe.DirName == "" {
		r.modprobe.DirName = v1beta1.DefaultDirName
	}
	if spec.ImageRepoSecret != nil {
		s := *spec.ImageRepoSecret
		r.imageRepoSecret = &s
	}

	imageField, image := mpath+".containerImage", mapping.ContainerImage
	if image == "" {
		imageField, image = "spec.moduleLoader.container.containerImage", container.ContainerImage
	}
	if image == "" {
		return nil, &FieldError{Field: mpath + ".containerImage", Err: fmt.Errorf("no image: set it in the mapping or in spec.moduleLoader.container.containerImage")}
	}
	var err error
	if r.image, err = expand(imageField, image); err != nil {
		return nil, err
	}
	if err := checkImage(r.image); err != nil {
		return nil, &FieldError{Field: imageField, Value: image, Err: err}
	}

	if mapping.RegistryTLS != nil {
		r.registryTLS = *mapping.RegistryTLS
	} else {
		r.registryTLS = container.RegistryTLS
	}

	r.build = mergeBuild(container.Build, mapping.Build)

	r.sign = mergeSign(container.Sign, mapping.Sign)
	if r.sign != nil {
		if r.sign.UnsignedImage != "" {
			f := mpath + ".sign.unsignedImage"
			if mapping.Sign == nil || mapping.Sign.UnsignedImage == "" {
				f = "spec.moduleLoader.container.sign.unsignedImage"
			}
			tmpl := r.sign.UnsignedImage
			if r.sign.UnsignedImage, err = expand(f, tmpl); err != nil {
				return nil, err
			}
			if err := checkImage(r.sign.UnsignedImage); err != nil {
				return nil, &FieldError{Field: f, Value: tmpl, Err: err}
			}
		}
		for i, f := range r.sign.FilesToSign {
			if r.sign.FilesToSign[i], err = expand(filesToSignField(container, mapping, mpath, i), f); err != nil {
				return nil, err
			}
		}
	}

	r.inTree = slices.Clone(container.InTreeModulesToRemove)
	if mapping.InTreeModulesToRemove != nil {
		r.inTree = slices.Clone(mapping.InTreeModulesToRemove)
	}
	single := container.InTreeModuleToRemove
	if mapping.InTreeModuleToRemove != "" {
		single = mapping.InTreeModuleToRemove
	}
	if single != "" {
		r.inTree = []string{single}
	}
	return r, nil
}

// filesToSignField names the field that item i of the merged filesToSign
// came from: the container's list comes first, then the mapping's.
func filesToSignField(c *v1beta1.ModuleLoaderContainerSpec, km *v1beta1.KernelMapping, mpath string, i int) string {
	if c.Sign != nil {
		if i < len(c.Sign.FilesToSign) {
			return fmt.Sprintf("spec.moduleLoader.container.sign.filesToSign[%d]", i)
		}
		i -= len(c.Sign.FilesToSign)
	}
	return fmt.Sprintf("%s.sign.filesToSign[%d]", mpath, i)
}

// checkImage checks that a resolved image is a valid reference with an
// explicit tag or digest.
func checkImage(image string) error {
	ref, err := name.ParseReference(image)
	if err != nil {
		return fmt.Errorf("resolved image %q is not a valid image reference: %w", image, err)
	}
	if _, isDigest := ref.(name.Digest); !isDigest {
		last := image[strings.LastIndexByte(image, '/')+1:]
		if !strings.Contains(last, ":") {
			return fmt.Errorf("resolved image %q has neither a tag nor a digest", image)
		}
	}
	return nil
}

// mergeBuild merges the container-wide and the mapping build as KMM does:
// the mapping's Dockerfile ConfigMap wins, build args are merged by name
// with the mapping's value winning and new names appended in sorted order,
// and secrets are concatenated. Unlike KMM, which silently drops them, the
// mapping's baseImageRegistryTLS (when not the zero value), kanikoParams and
// selector also override the container's.
func mergeBuild(container, mapping *v1beta1.Build) *v1beta1.Build {
	switch {
	case container == nil && mapping == nil:
		return nil
	case container == nil:
		return mapping.DeepCopy()
	case mapping == nil:
		return container.DeepCopy()
	}
	out := container.DeepCopy()
	if mapping.DockerfileConfigMap != nil {
		cm := *mapping.DockerfileConfigMap
		out.DockerfileConfigMap = &cm
	}
	out.BuildArgs = MergeBuildArgs(out.BuildArgs, mapping.BuildArgs)
	out.Secrets = append(out.Secrets, mapping.Secrets...)
	if mapping.BaseImageRegistryTLS != (v1beta1.TLSOptions{}) {
		out.BaseImageRegistryTLS = mapping.BaseImageRegistryTLS
	}
	if mapping.KanikoParams != nil {
		kp := *mapping.KanikoParams
		out.KanikoParams = &kp
	}
	if len(mapping.Selector) > 0 {
		out.Selector = cloneMap(mapping.Selector)
	}
	return out
}

// MergeBuildArgs returns base with overrides applied the way KMM applies
// them: an override whose name is already in base replaces its value in
// place, and the other overrides are appended in the sorted order of their
// names. Neither input is modified.
func MergeBuildArgs(base, overrides []v1beta1.BuildArg) []v1beta1.BuildArg {
	out := slices.Clone(base)
	index := make(map[string]int, len(out))
	for i, a := range out {
		if _, dup := index[a.Name]; !dup {
			index[a.Name] = i
		}
	}
	var added []v1beta1.BuildArg
	addedAt := map[string]int{}
	for _, o := range overrides {
		if i, ok := index[o.Name]; ok {
			out[i].Value = o.Value
			continue
		}
		if j, ok := addedAt[o.Name]; ok {
			added[j].Value = o.Value
			continue
		}
		addedAt[o.Name] = len(added)
		added = append(added, o)
	}
	sort.SliceStable(added, func(i, j int) bool { return added[i].Name < added[j].Name })
	return append(out, added...)
}

// mergeSign merges the container-wide and the mapping signing as KMM does:
// the mapping's unsignedImage, keySecret and certSecret win when set, and
// filesToSign is the container's list followed by the mapping's. The
// mapping's unsignedImageRegistryTLS also wins when not the zero value (KMM
// ignores it).
func mergeSign(container, mapping *v1beta1.Sign) *v1beta1.Sign {
	switch {
	case container == nil && mapping == nil:
		return nil
	case container == nil:
		return mapping.DeepCopy()
	case mapping == nil:
		return container.DeepCopy()
	}
	out := container.DeepCopy()
	if mapping.UnsignedImage != "" {
		out.UnsignedImage = mapping.UnsignedImage
	}
	if mapping.KeySecret != nil {
		s := *mapping.KeySecret
		out.KeySecret = &s
	}
	if mapping.CertSecret != nil {
		s := *mapping.CertSecret
		out.CertSecret = &s
	}
	if mapping.UnsignedImageRegistryTLS != (v1beta1.TLSOptions{}) {
		out.UnsignedImageRegistryTLS = mapping.UnsignedImageRegistryTLS
	}
	out.FilesToSign = append(out.FilesToSign, mapping.FilesToSign...)
	return out
}

// InternalTolerations are the tolerations KMM adds to every Module's own:
// node pressure taints do not make a node drop out of the targeted set.
func InternalTolerations() []corev1.Toleration {
	keys := []string{"node.kubernetes.io/disk-pressure", "node.kubernetes.io/memory-pressure", "node.kubernetes.io/pid-pressure"}
	out := make([]corev1.Toleration, len(keys))
	for i, k := range keys {
		out[i] = corev1.Toleration{Key: k, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	}
	return out
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
