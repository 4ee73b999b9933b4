package kernelmap_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/internal/envsubst"
	"github.com/kmmkit/kmmkit/internal/kmmconformance"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// The KMM files whose cases follow (kubernetes-sigs/kernel-module-management).
const (
	kmmMapper    = "internal/module/kernelmapper_test.go: "
	kmmOverrider = "internal/module/buildargoverrider_test.go: "
	kmmStrings   = "internal/utils/replaceStrings_test.go: "
	kmmKernel    = "internal/kernel/kernel_test.go: "
)

// kmmModule is the Module of KMM's kernel mapper tests: a module-wide
// image and pull policy, one mapping, and the other module-level fields
// the resolved record copies.
func kmmModule(mapping v1beta1.KernelMapping) *v1beta1.Module {
	return &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "mod", Namespace: "ns"},
		Spec: v1beta1.ModuleSpec{
			Selector:        map[string]string{"feature.node.kubernetes.io/nic": "true"},
			ImageRepoSecret: &corev1.LocalObjectReference{Name: "pull"},
			Tolerations:     []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{
				ServiceAccountName: "sa",
				Container: v1beta1.ModuleLoaderContainerSpec{
					ContainerImage:  "registry.example.com/spec-image:v1",
					ImagePullPolicy: corev1.PullAlways,
					Modprobe:        v1beta1.ModprobeSpec{ModuleName: "mod", DirName: "/opt"},
					KernelMappings:  []v1beta1.KernelMapping{mapping},
				},
			},
		},
	}
}

func resolve(t *testing.T, m *v1beta1.Module, kernel string) *kernelmap.Record {
	t.Helper()
	rec, err := mapper(t).Resolve(m, kernel)
	require.NoError(t, err)
	return rec
}

// mapper is a new Mapper with the defaults.
func mapper(t *testing.T) *kernelmap.Mapper {
	t.Helper()
	m, err := kernelmap.New()
	require.NoError(t, err)
	return m
}

// assertModuleLevel checks the record fields KMM's prepareModuleLoaderData
// always takes from the Module.
func assertModuleLevel(t *testing.T, m *v1beta1.Module, rec *kernelmap.Record, kernel string) {
	t.Helper()
	assert.Equal(t, m.Name, rec.ModuleName())
	assert.Equal(t, m.Namespace, rec.Namespace())
	assert.Equal(t, kernel, rec.Kernel().Version)
	assert.Equal(t, m.Spec.ImageRepoSecret, rec.ImageRepoSecret())
	assert.Equal(t, m.Spec.Selector, rec.Selector())
	assert.Equal(t, m.Spec.ModuleLoader.ServiceAccountName, rec.ServiceAccountName())
	assert.Equal(t, m.Spec.ModuleLoader.Container.Modprobe, rec.Modprobe())
	assert.Equal(t, m.Spec.ModuleLoader.Container.ImagePullPolicy, rec.ImagePullPolicy())
	assert.Equal(t, append(m.Spec.Tolerations, kernelmap.InternalTolerations()...), rec.Tolerations(), "the Module's tolerations, then KMM's internal ones")
}

func kmmBuild() *v1beta1.Build {
	return &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "some name"}}
}

func kmmSign() *v1beta1.Sign {
	return &v1beta1.Sign{UnsignedImage: "registry.example.com/unsigned:v1", KeySecret: ref("key"), CertSecret: ref("cert"),
		FilesToSign: []string{"/opt/lib/modules/1.2.3/mod.ko"}}
}

func ref(n string) *corev1.LocalObjectReference { return &corev1.LocalObjectReference{Name: n} }

// prepareMapping is one entry of KMM's "prepare mapping" table: which of
// build, sign, registryTLS, containerImage and inTreeModulesToRemove the
// mapping or the container sets.
func prepareMapping(buildInMapping, buildInSpec, signInMapping, signInSpec, tlsInMapping, imageInMapping, inTreeInMapping bool) func(t *testing.T) {
	return func(t *testing.T) {
		km := v1beta1.KernelMapping{Literal: "1.2.3"}
		m := kmmModule(km)
		c := &m.Spec.ModuleLoader.Container
		mp := &c.KernelMappings[0]
		if buildInMapping {
			mp.Build = kmmBuild()
		}
		if buildInSpec {
			c.Build = kmmBuild()
		}
		if signInMapping {
			mp.Sign = kmmSign()
		}
		if signInSpec {
			c.Sign = kmmSign()
		}
		c.RegistryTLS = v1beta1.TLSOptions{InsecureSkipTLSVerify: true}
		if tlsInMapping {
			mp.RegistryTLS = &v1beta1.TLSOptions{Insecure: true}
		}
		if imageInMapping {
			mp.ContainerImage = "registry.example.com/mapping-image:v1"
		}
		if inTreeInMapping {
			mp.InTreeModulesToRemove = []string{"inTreeModule1", "inTreeModule2"}
		}
		rec := resolve(t, m, "1.2.3")
		assertModuleLevel(t, m, rec, "1.2.3")
		if buildInMapping || buildInSpec {
			assert.Equal(t, kmmBuild(), rec.Build())
		} else {
			assert.Nil(t, rec.Build())
		}
		if signInMapping || signInSpec {
			assert.Equal(t, kmmSign(), rec.Sign())
		} else {
			assert.Nil(t, rec.Sign())
		}
		if tlsInMapping {
			assert.Equal(t, v1beta1.TLSOptions{Insecure: true}, rec.RegistryTLS())
		} else {
			assert.Equal(t, c.RegistryTLS, rec.RegistryTLS())
		}
		if imageInMapping {
			assert.Equal(t, "registry.example.com/mapping-image:v1", rec.Image())
		} else {
			assert.Equal(t, "registry.example.com/spec-image:v1", rec.Image())
		}
		if inTreeInMapping {
			assert.Equal(t, []string{"inTreeModule1", "inTreeModule2"}, rec.InTreeModulesToRemove())
		} else {
			assert.Empty(t, rec.InTreeModulesToRemove())
		}
	}
}

// inTreeSingle is one entry of KMM's table for the deprecated
// inTreeModuleToRemove.
func inTreeSingle(inContainer, inMapping bool, want []string) func(t *testing.T) {
	return func(t *testing.T) {
		m := kmmModule(v1beta1.KernelMapping{Literal: "1.2.3"})
		c := &m.Spec.ModuleLoader.Container
		if inContainer {
			c.InTreeModuleToRemove = "inTreeModuleToRemoveInContainer"
		}
		if inMapping {
			c.KernelMappings[0].InTreeModuleToRemove = "inTreeModuleToRemoveInMapping"
		}
		assert.Equal(t, want, resolve(t, m, "1.2.3").InTreeModulesToRemove())
	}
}

// relevantSign is one entry of KMM's getRelevantSign table: the container
// and mapping signing merge into the same signing for kernel 1.2.3.
func relevantSign(module, mapping *v1beta1.Sign) func(t *testing.T) {
	return func(t *testing.T) {
		m := kmmModule(v1beta1.KernelMapping{Literal: "1.2.3"})
		m.Spec.ModuleLoader.Container.Sign = module
		m.Spec.ModuleLoader.Container.KernelMappings[0].Sign = mapping
		want := &v1beta1.Sign{
			UnsignedImage: "my.registry/my/image:v1",
			KeySecret:     ref("securebootkey"),
			CertSecret:    ref("securebootcert"),
			FilesToSign:   []string{"/modules/simple-kmod.ko", "/modules/simple-procfs-kmod.ko"},
		}
		assert.Equal(t, want, resolve(t, m, "1.2.3").Sign())
	}
}

// The signing parts of KMM's getRelevantSign table. KMM's unsigned image
// my.registry/my/image has no tag, which kmmkit refuses (see "Images need a
// tag or a digest"); the cases use my.registry/my/image:v1.
var (
	signAll = func() *v1beta1.Sign {
		return &v1beta1.Sign{UnsignedImage: "my.registry/my/image:v1", KeySecret: ref("securebootkey"), CertSecret: ref("securebootcert"),
			FilesToSign: []string{"/modules/simple-kmod.ko", "/modules/simple-procfs-kmod.ko"}}
	}
	files = []string{"/modules/simple-kmod.ko", "/modules/simple-procfs-kmod.ko"}
)

func TestKMMConformanceKernelMapping(t *testing.T) {
	kmmconformance.Run(t, []kmmconformance.Case{
		// GetModuleLoaderDataForKernel
		{KMM: kmmMapper + "GetModuleLoaderDataForKernel: good flow", Check: func(t *testing.T) {
			rec := resolve(t, kmmModule(v1beta1.KernelMapping{Literal: "1.2.3"}), "1.2.3")
			assert.Equal(t, "1.2.3", rec.Kernel().Version)
			assert.Equal(t, 0, rec.MappingIndex())
		}},
		{KMM: kmmMapper + "GetModuleLoaderDataForKernel: failed to find kernel mapping, internal error", Check: func(t *testing.T) {
			rec, err := mapper(t).Resolve(kmmModule(v1beta1.KernelMapping{Regexp: "invalid)"}), "1.2.3")
			var fe *kernelmap.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "spec.moduleLoader.container.kernelMappings[0].regexp", fe.Field)
			assert.False(t, errors.Is(err, kernelmap.ErrNoMapping), "a broken regexp is not 'no mapping'")
			assert.Nil(t, rec)
		}},
		{KMM: kmmMapper + "GetModuleLoaderDataForKernel: failed to find kernel mapping, mapping not present", Check: func(t *testing.T) {
			rec, err := mapper(t).Resolve(kmmModule(v1beta1.KernelMapping{Literal: "1.2.4"}), "1.2.3")
			assert.ErrorIs(t, err, kernelmap.ErrNoMapping)
			assert.Nil(t, rec)
		}},
		{KMM: kmmMapper + "GetModuleLoaderDataForKernel: failed to merge mapping data", Check: func(t *testing.T) {
			// KMM's merge fails only when the signing's templates do.
			m := kmmModule(v1beta1.KernelMapping{Literal: "1.2.3"})
			m.Spec.ModuleLoader.Container.Sign = kmmSign()
			m.Spec.ModuleLoader.Container.Sign.UnsignedImage = "registry.example.com/unsigned:${KERNEL_XYZ"
			rec, err := mapper(t).Resolve(m, "1.2.3")
			var fe *kernelmap.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "spec.moduleLoader.container.sign.unsignedImage", fe.Field)
			assert.Nil(t, rec)
		}},
		{KMM: kmmMapper + "GetModuleLoaderDataForKernel: failed to replace templates", Check: func(t *testing.T) {
			m := kmmModule(v1beta1.KernelMapping{Literal: "1.2.3", ContainerImage: "registry.example.com/m:${KERNEL_XYZ"})
			rec, err := mapper(t).Resolve(m, "1.2.3")
			var fe *kernelmap.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "spec.moduleLoader.container.kernelMappings[0].containerImage", fe.Field)
			assert.Nil(t, rec)
		}},

		// findKernelMapping, kernel 1.2.3
		{KMM: kmmMapper + "findKernelMapping: one literal mapping", Check: func(t *testing.T) {
			i, err := mapper(t).Find([]v1beta1.KernelMapping{{Literal: "1.2.3"}}, "1.2.3")
			require.NoError(t, err)
			assert.Equal(t, 0, i)
		}},
		{KMM: kmmMapper + "findKernelMapping: one regexp mapping", Check: func(t *testing.T) {
			i, err := mapper(t).Find([]v1beta1.KernelMapping{{Regexp: `1\..*`}}, "1.2.3")
			require.NoError(t, err)
			assert.Equal(t, 0, i)
		}},
		{KMM: kmmMapper + "findKernelMapping: should return an error if a regex is invalid", Check: func(t *testing.T) {
			i, err := mapper(t).Find([]v1beta1.KernelMapping{{Regexp: "invalid)"}}, "1.2.3")
			var fe *kernelmap.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "invalid)", fe.Value)
			assert.Equal(t, -1, i)
		}},
		{KMM: kmmMapper + "findKernelMapping: should return an error if no mapping work", Check: func(t *testing.T) {
			i, err := mapper(t).Find([]v1beta1.KernelMapping{{Regexp: `1.2.2`}, {Regexp: `0\..*`}}, "1.2.3")
			assert.ErrorIs(t, err, kernelmap.ErrNoMapping)
			assert.Equal(t, -1, i)
		}},

		// prepareModuleLoaderData: prepare mapping
		{KMM: kmmMapper + "prepareModuleLoaderData: prepare mapping: build in mapping only", Check: prepareMapping(true, false, false, false, false, false, false)},
		{KMM: kmmMapper + "prepareModuleLoaderData: prepare mapping: build in spec only", Check: prepareMapping(false, true, false, false, false, false, false)},
		{KMM: kmmMapper + "prepareModuleLoaderData: prepare mapping: sign in mapping only", Check: prepareMapping(false, false, true, false, false, false, false)},
		{KMM: kmmMapper + "prepareModuleLoaderData: prepare mapping: sign in spec only", Check: prepareMapping(false, false, false, true, false, false, false)},
		{KMM: kmmMapper + "prepareModuleLoaderData: prepare mapping: registryTLS in mapping", Check: prepareMapping(false, false, false, false, true, false, false)},
		{KMM: kmmMapper + "prepareModuleLoaderData: prepare mapping: containerImage in mapping", Check: prepareMapping(false, false, false, false, false, true, false)},
		{KMM: kmmMapper + "prepareModuleLoaderData: prepare mapping: inTreeModulesToRemove in mapping", Check: prepareMapping(false, false, false, false, false, false, true)},
		// prepareModuleLoaderData: prepare InTreeModules based on InTreeModule
		{KMM: kmmMapper + "prepareModuleLoaderData: inTreeModule not defined", Check: inTreeSingle(false, false, nil)},
		{KMM: kmmMapper + "prepareModuleLoaderData: inTreeModule defined in container", Check: inTreeSingle(true, false, []string{"inTreeModuleToRemoveInContainer"})},
		{KMM: kmmMapper + "prepareModuleLoaderData: inTreeModule defined in mapping", Check: inTreeSingle(false, true, []string{"inTreeModuleToRemoveInMapping"})},
		{KMM: kmmMapper + "prepareModuleLoaderData: inTreeModule defined in mapping and container", Check: inTreeSingle(true, true, []string{"inTreeModuleToRemoveInMapping"})},

		// replaceTemplates, kernel 5.8.18-100.fc31.x86_64
		{KMM: kmmMapper + "replaceTemplates: error input", Check: func(t *testing.T) {
			m := kmmModule(v1beta1.KernelMapping{Regexp: "^.+$", ContainerImage: "some-image:${KERNEL_XYZ"})
			_, err := mapper(t).Resolve(m, "5.8.18-100.fc31.x86_64")
			assert.ErrorContains(t, err, "kernelMappings[0].containerImage")
		}},
		{KMM: kmmMapper + "replaceTemplates: should only substitute the ContainerImage field", Check: func(t *testing.T) {
			m := kmmModule(v1beta1.KernelMapping{Regexp: "^.+$", ContainerImage: "some-image:${KERNEL_XYZ}"})
			m.Spec.ModuleLoader.Container.Build = &v1beta1.Build{
				BuildArgs:           []v1beta1.BuildArg{{Name: "name1", Value: "value1"}, {Name: "kernel version", Value: "${KERNEL_FULL_VERSION}"}},
				DockerfileConfigMap: &corev1.LocalObjectReference{},
			}
			rec := resolve(t, m, "5.8.18-100.fc31.x86_64")
			assert.Equal(t, "some-image:5.8.18", rec.Image())
			assert.Equal(t, m.Spec.ModuleLoader.Container.Build.BuildArgs, rec.Build().BuildArgs, "build args are passed verbatim")
		}},
		{KMM: kmmMapper + "replaceTemplates: should only substitute the ContainerImage field (its image has a space)",
			Differs: "A resolved image must be a valid reference with a tag or a digest", Check: func(t *testing.T) {
				m := kmmModule(v1beta1.KernelMapping{Regexp: "^.+$", ContainerImage: "some image:${KERNEL_XYZ}"})
				_, err := mapper(t).Resolve(m, "5.8.18-100.fc31.x86_64")
				var fe *kernelmap.FieldError
				require.ErrorAs(t, err, &fe)
				assert.Contains(t, fe.Error(), `resolved image "some image:5.8.18" is not a valid image reference`)
			}},

		// getRelevantBuild
		{KMM: kmmMapper + "getRelevantBuild: kernel mapping build present, module loader build absent", Check: func(t *testing.T) {
			m := kmmModule(v1beta1.KernelMapping{Literal: "1.2.3"})
			b := &v1beta1.Build{DockerfileConfigMap: ref("some kernel mapping build name")}
			m.Spec.ModuleLoader.Container.KernelMappings[0].Build = b
			assert.Equal(t, b, resolve(t, m, "1.2.3").Build())
		}},
		{KMM: kmmMapper + "getRelevantBuild: kernel mapping build absent, module loader build present", Check: func(t *testing.T) {
			m := kmmModule(v1beta1.KernelMapping{Literal: "1.2.3"})
			b := &v1beta1.Build{DockerfileConfigMap: ref("some load module build name")}
			m.Spec.ModuleLoader.Container.Build = b
			assert.Equal(t, b, resolve(t, m, "1.2.3").Build())
		}},
		{KMM: kmmMapper + "getRelevantBuild: kernel mapping and module loader builds are present, overrides", Check: func(t *testing.T) {
			m := kmmModule(v1beta1.KernelMapping{Literal: "1.2.3"})
			m.Spec.ModuleLoader.Container.Build = &v1beta1.Build{DockerfileConfigMap: ref("some load module build name"),
				BaseImageRegistryTLS: v1beta1.TLSOptions{Insecure: true, InsecureSkipTLSVerify: true}}
			m.Spec.ModuleLoader.Container.KernelMappings[0].Build = &v1beta1.Build{DockerfileConfigMap: ref("some kernel mapping build name")}
			b := resolve(t, m, "1.2.3").Build()
			assert.Equal(t, ref("some kernel mapping build name"), b.DockerfileConfigMap)
			assert.Equal(t, v1beta1.TLSOptions{Insecure: true, InsecureSkipTLSVerify: true}, b.BaseImageRegistryTLS)
		}},

		// getRelevantSign: should set fields correctly
		{KMM: kmmMapper + "getRelevantSign: no km.Sign", Check: relevantSign(signAll(), nil)},
		{KMM: kmmMapper + "getRelevantSign: no container.Sign", Check: relevantSign(nil, signAll())},
		{KMM: kmmMapper + "getRelevantSign: default UnsignedImage", Check: relevantSign(
			&v1beta1.Sign{UnsignedImage: "my.registry/my/image:v1"},
			&v1beta1.Sign{KeySecret: ref("securebootkey"), CertSecret: ref("securebootcert"), FilesToSign: files})},
		{KMM: kmmMapper + "getRelevantSign: default UnsignedImage and KeySecret", Check: relevantSign(
			&v1beta1.Sign{UnsignedImage: "my.registry/my/image:v1", KeySecret: ref("securebootkey")},
			&v1beta1.Sign{CertSecret: ref("securebootcert"), FilesToSign: files})},
		{KMM: kmmMapper + "getRelevantSign: default UnsignedImage, KeySecret, and CertSecret", Check: relevantSign(
			&v1beta1.Sign{UnsignedImage: "my.registry/my/image:v1", KeySecret: ref("securebootkey"), CertSecret: ref("securebootcert")},
			&v1beta1.Sign{FilesToSign: files})},
		{KMM: kmmMapper + "getRelevantSign: default FilesToSign only", Check: relevantSign(
			&v1beta1.Sign{FilesToSign: files},
			&v1beta1.Sign{UnsignedImage: "my.registry/my/image:v1", KeySecret: ref("securebootkey"), CertSecret: ref("securebootcert")})},

		// ApplyBuildArgOverrides
		{KMM: kmmOverrider + "ApplyBuildArgOverrides: apply overrides", Check: func(t *testing.T) {
			got := kernelmap.MergeBuildArgs(
				[]v1beta1.BuildArg{{Name: "name1", Value: "value1"}, {Name: "name2", Value: "value2"}},
				[]v1beta1.BuildArg{{Name: "name1", Value: "valueOverride1"}, {Name: "overrideName2", Value: "overrideValue2"}})
			assert.Equal(t, []v1beta1.BuildArg{{Name: "name1", Value: "valueOverride1"}, {Name: "name2", Value: "value2"},
				{Name: "overrideName2", Value: "overrideValue2"}}, got)
		}},

		// KernelComponentsAsEnvVars and ReplaceInTemplates
		{KMM: kmmStrings + "KernelComponentsAsEnvVars: should work as expected", Check: func(t *testing.T) {
			k, err := kernelmap.ParseKernel("6.0.15-300.fc37.x86_64")
			require.NoError(t, err)
			vars := k.Vars("m", "ns")
			for name, want := range map[string]string{
				kernelmap.VarKernelFullVersion: "6.0.15-300.fc37.x86_64", kernelmap.VarKernelVersion: "6.0.15-300.fc37.x86_64",
				kernelmap.VarKernelXYZ: "6.0.15", kernelmap.VarKernelX: "6", kernelmap.VarKernelY: "0", kernelmap.VarKernelZ: "15",
			} {
				assert.Equal(t, want, vars[name], name)
			}
		}},
		{KMM: kmmStrings + "KernelComponentsAsEnvVars: should fail due to invalid kernel version", Check: func(t *testing.T) {
			_, err := kernelmap.ParseKernel("test")
			assert.ErrorContains(t, err, "expected at least three components (major.minor.patch)")
		}},
		{KMM: kmmStrings + "ReplaceInTemplates: should work as expected", Check: func(t *testing.T) {
			vars := map[string]string{"A": "AAA", "B": "BBB", "C": "CCC"}
			lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
			for tmpl, want := range map[string]string{
				"string with template $A":   "string with template AAA",
				"string with template ${B}": "string with template BBB",
				"string without template":   "string without template",
			} {
				got, err := envsubst.Expand(tmpl, lookup)
				require.NoError(t, err)
				assert.Equal(t, want, got)
			}
		}},

		// NormalizeVersion: should work as expected
		{KMM: kmmKernel + "NormalizeVersion: 1.2.3-4", Check: normalized("1.2.3-4", "1.2.3-4")},
		{KMM: kmmKernel + "NormalizeVersion: 1.2.3+4", Check: normalized("1.2.3+4", "1.2.3_4")},
		{KMM: kmmKernel + "NormalizeVersion: 1.2.3_4", Check: normalized("1.2.3_4", "1.2.3_4")},
		{KMM: kmmKernel + "NormalizeVersion: 1.2.3&4", Check: normalized("1.2.3&4", "1.2.3_4")},
		{KMM: kmmKernel + "NormalizeVersion: 1.2.3%4", Check: normalized("1.2.3%4", "1.2.3_4")},
		{KMM: kmmKernel + "NormalizeVersion: 1.2.3?4", Check: normalized("1.2.3?4", "1.2.3_4")},
		{KMM: kmmKernel + "NormalizeVersion: 1.2.3 4", Check: normalized("1.2.3 4", "1.2.3_4")},
	})
}

// normalized checks KMM's NormalizeVersion, and that the normalised
// kernel is what the variables carry.
func normalized(in, want string) func(t *testing.T) {
	return func(t *testing.T) {
		assert.Equal(t, want, kernelmap.NormalizeKernel(in))
		k, err := kernelmap.ParseKernel(in)
		require.NoError(t, err)
		assert.Equal(t, want, k.Vars("m", "ns")[kernelmap.VarKernelFullVersion])
		assert.False(t, strings.ContainsAny(k.Tag(), "+&%? "))
	}
}
