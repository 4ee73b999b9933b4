package v1beta1_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/internal/kmmconformance"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// kmmWebhook is the KMM file whose cases follow
// (kubernetes-sigs/kernel-module-management).
const kmmWebhook = "internal/webhook/module_test.go: "

const pContainer = "spec.moduleLoader.container"

// validModule is KMM's validModule, with what KMM's CRD also requires of
// it (a name and a selector).
func validModule() *v1beta1.Module {
	return &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "mod", Namespace: "ns"},
		Spec: v1beta1.ModuleSpec{
			Selector: map[string]string{},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe:       v1beta1.ModprobeSpec{ModuleName: "mod-name"},
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp", ContainerImage: "image-url:mytag"}},
			}},
		},
	}
}

// withContainer is validModule with KMM's container spec; its modprobe
// section stays valid unless the case sets one.
func withContainer(c v1beta1.ModuleLoaderContainerSpec) *v1beta1.Module {
	m := validModule()
	if c.Modprobe.ModuleName == "" && c.Modprobe.RawArgs == nil {
		c.Modprobe.ModuleName = "mod-name"
	}
	m.Spec.ModuleLoader.Container = c
	return m
}

func withModprobe(mp v1beta1.ModprobeSpec) *v1beta1.Module {
	m := validModule()
	m.Spec.ModuleLoader.Container.Modprobe = mp
	return m
}

// refused asserts that errs hold an error at path whose text contains
// every one of msgs.
func refused(t *testing.T, errs field.ErrorList, path string, msgs ...string) {
	t.Helper()
	for _, e := range errs {
		if e.Field != path {
			continue
		}
		ok := true
		for _, m := range msgs {
			ok = ok && strings.Contains(e.Error(), m)
		}
		if ok {
			return
		}
	}
	t.Errorf("no error at %s containing %q; errors: %v", path, msgs, errs)
}

// accepted asserts that a Module is valid.
func accepted(t *testing.T, errs field.ErrorList) {
	t.Helper()
	assert.Empty(t, errs, "errors: %v", errs)
}

func tolerations(ts ...corev1.Toleration) field.ErrorList {
	m := validModule()
	m.Spec.Tolerations = ts
	return v1beta1.Validate(m)
}

func draSpec() *v1beta1.DRASpec {
	return &v1beta1.DRASpec{DriverName: "example.com", Container: v1beta1.CommonContainerSpec{Image: "driver:latest"}}
}

func validateDRA(d *v1beta1.DRASpec, opts ...v1beta1.ValidateOption) field.ErrorList {
	return v1beta1.ValidateSpec(&v1beta1.ModuleSpec{Selector: map[string]string{}, DRA: d}, field.NewPath("spec"), opts...)
}

// kubeGate is one entry of KMM's "Kubernetes version gate" table.
func kubeGate(version string, refusedHere bool) func(t *testing.T) {
	return func(t *testing.T) {
		var opts []v1beta1.ValidateOption
		if version != "" {
			opts = append(opts, v1beta1.WithKubernetesVersion(version))
		}
		errs := validateDRA(draSpec(), opts...)
		if refusedHere {
			refused(t, errs, "spec.dra", "requires Kubernetes 1.34 or later")
		} else {
			accepted(t, errs)
		}
	}
}

// hostPath validates a device plugin (and a DRA driver) with one volume.
func hostPath(path string, ok bool) func(t *testing.T) {
	return func(t *testing.T) {
		vol := corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}}
		for _, spec := range []v1beta1.ModuleSpec{
			{Selector: map[string]string{}, DevicePlugin: &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "dp:v1"}, Volumes: []corev1.Volume{vol}}},
			{Selector: map[string]string{}, DRA: &v1beta1.DRASpec{DriverName: "example.com", Container: v1beta1.CommonContainerSpec{Image: "dra:v1"}, Volumes: []corev1.Volume{vol}}},
		} {
			errs := v1beta1.ValidateSpec(&spec, field.NewPath("spec"))
			where := "spec.devicePlugin"
			if spec.DRA != nil {
				where = "spec.dra"
			}
			if ok {
				accepted(t, errs)
			} else {
				refused(t, errs, where+".volumes[0].hostPath.path", "hostPath volumes must be under one of /dev, /sys, /var, /opt, /run")
			}
		}
	}
}

// inTreeBoth is an entry of KMM's "should fail when InTreeModulesToRemove
// and InTreeModuleToRemove both defined" table. Its mapping has an image
// without a tag and neither regexp nor literal, so KMM refuses every
// entry for that too.
func inTreeBoth(pluralC, singleC, pluralKM, singleKM bool, conflict string) func(t *testing.T) {
	return func(t *testing.T) {
		c := v1beta1.ModuleLoaderContainerSpec{}
		km := v1beta1.KernelMapping{ContainerImage: "image-url"}
		if pluralC {
			c.InTreeModulesToRemove = []string{"some_value"}
		}
		if singleC {
			c.InTreeModuleToRemove = "some_value"
		}
		if pluralKM {
			km.InTreeModulesToRemove = []string{"some_value"}
		}
		if singleKM {
			km.InTreeModuleToRemove = "some_value"
		}
		c.KernelMappings = []v1beta1.KernelMapping{km}
		errs := v1beta1.Validate(withContainer(c))
		refused(t, errs, pContainer+".kernelMappings[0].regexp", "regexp or literal must be set")
		refused(t, errs, pContainer+".kernelMappings[0].containerImage", "must explicitly set a tag or digest")
		if conflict != "" {
			refused(t, errs, conflict, "inTreeModule")
		}
	}
}

func versionUpdate(from, to string, refusedHere bool) func(t *testing.T) {
	return func(t *testing.T) {
		older, newer := validModule(), validModule()
		older.Spec.ModuleLoader.Container.Version = from
		newer.Spec.ModuleLoader.Container.Version = to
		errs := v1beta1.ValidateUpdate(older, newer)
		if refusedHere {
			refused(t, errs, pContainer+".version", "please delete the Module and create it again")
		} else {
			accepted(t, errs)
		}
	}
}

func TestKMMConformanceModuleWebhook(t *testing.T) {
	tolSecs := int64(30)
	kmmconformance.Run(t, []kmmconformance.Case{
		{KMM: kmmWebhook + "maxCombinedLength: should be the accurate maximum length", Check: func(t *testing.T) {
			// The longest of KMM's per-Module label name parts is
			// version-schedule-pod.<ns>.<name>.
			assert.Equal(t, 63-len("version-schedule-pod.."), v1beta1.MaxNameNamespaceLength)
		}},

		// validateImageFormat
		{KMM: kmmWebhook + "validateImageFormat: should fail if no tag or digest were specified", Check: func(t *testing.T) {
			m := validModule()
			m.Spec.ModuleLoader.Container.ContainerImage = "image-ur"
			refused(t, v1beta1.Validate(m), pContainer+".containerImage", "must explicitly set a tag or digest")
		}},
		{KMM: kmmWebhook + "validateImageFormat: should work if a tag or digest were specified", Check: func(t *testing.T) {
			for _, image := range []string{"image-url:tag", "image-url@sha256:xxxxxxxxxxxx"} {
				m := validModule()
				m.Spec.ModuleLoader.Container.ContainerImage = image
				accepted(t, v1beta1.Validate(m))
			}
		}},

		// validateModuleLoaderContainerSpec
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should pass when there are not kernel mappings",
			Differs: "Validate is KMM's webhook and its CRD schema together", Check: func(t *testing.T) {
				refused(t, v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{})), pContainer+".kernelMappings", "at least one kernel mapping")
			}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should fail if the containerImage doesn't contain a sha or tag", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{ContainerImage: "image-url",
				KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp"}}}))
			refused(t, errs, pContainer+".containerImage", "must explicitly set a tag or digest")
		}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should pass when regexp,literal and containerImage are valid", Check: func(t *testing.T) {
			for _, c := range []v1beta1.ModuleLoaderContainerSpec{
				{KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp", ContainerImage: "image-url:mytag"}, {Regexp: "^.*$", ContainerImage: "image-url:mytag"}}},
				{ContainerImage: "image-url:mytag", KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp"}}},
				{ContainerImage: "image-url:mytag", KernelMappings: []v1beta1.KernelMapping{{Literal: "any-value"}}},
			} {
				accepted(t, v1beta1.Validate(withContainer(c)))
			}
		}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should fail when an invalid regex is found", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{KernelMappings: []v1beta1.KernelMapping{{Regexp: "*-invalid-regexp"}}}))
			refused(t, errs, pContainer+".kernelMappings[0].regexp", "does not compile")
		}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should fail when literal and regex are set", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{KernelMappings: []v1beta1.KernelMapping{{Regexp: "^valid-regexp$", Literal: "any-value"}}}))
			refused(t, errs, pContainer+".kernelMappings[0].regexp", "regexp and literal are mutually exclusive")
		}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should fail when neither literal and regex are set", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{KernelMappings: []v1beta1.KernelMapping{{ContainerImage: "image-url"}}}))
			refused(t, errs, pContainer+".kernelMappings[0].regexp", "regexp or literal must be set")
		}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should fail when a kernel-mapping has invalid containerName (missing)", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp"}}}))
			refused(t, errs, pContainer+".kernelMappings[0].containerImage", "Required value")
		}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: should fail when a kernel-mapping has invalid containerName (no tag)", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp", ContainerImage: "image-url"}}}))
			refused(t, errs, pContainer+".kernelMappings[0].containerImage", "must explicitly set a tag or digest")
		}},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: InTreeModulesToRemove and InTreeModuleToRemove set in containerspec",
			Check: inTreeBoth(true, true, false, false, pContainer+".inTreeModuleToRemove")},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: InTreeModulesToRemove and InTreeModuleToRemove set in kernel mapping",
			Check: inTreeBoth(false, false, true, true, pContainer+".kernelMappings[0].inTreeModuleToRemove")},
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: InTreeModulesToRemove set in container spec, InTreeModuleToRemove set in kernel mapping",
			Check: inTreeBoth(true, false, false, true, pContainer+".kernelMappings[0].inTreeModuleToRemove")},
		// KMM's entry sets the plural form in both places (true, false,
		// true, false) despite its title: no conflict, refused for the
		// mapping's other faults only.
		{KMM: kmmWebhook + "validateModuleLoaderContainerSpec: InTreeModuleToRemove set in container spec, InTreeModulesToRemove set in kernel mapping",
			Check: inTreeBoth(true, false, true, false, "")},

		// validateModprobe
		{KMM: kmmWebhook + "validateModprobe: should fail when moduleName and rawArgs are missing", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{}))
			refused(t, errs, pContainer+".modprobe.rawArgs.load", "required when moduleName is not set")
			refused(t, errs, pContainer+".modprobe.rawArgs.unload", "required when moduleName is not set")
		}},
		{KMM: kmmWebhook + "validateModprobe: should fail when rawArgs.load is empty and moduleName is not set", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{RawArgs: &v1beta1.ModprobeArgs{Load: []string{}, Unload: []string{"arg"}}}))
			refused(t, errs, pContainer+".modprobe.rawArgs.load", "required when moduleName is not set")
		}},
		{KMM: kmmWebhook + "validateModprobe: should fail when rawArgs and moduleName are set", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{ModuleName: "mod-name", RawArgs: &v1beta1.ModprobeArgs{Load: []string{"arg"}, Unload: []string{"arg"}}}))
			refused(t, errs, pContainer+".modprobe.rawArgs", "rawArgs cannot be set when moduleName is set")
		}},
		{KMM: kmmWebhook + "validateModprobe: should fail when rawArgs.unload is empty and moduleName is not set", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{RawArgs: &v1beta1.ModprobeArgs{Load: []string{"arg"}, Unload: []string{}}}))
			refused(t, errs, pContainer+".modprobe.rawArgs.unload", "required when moduleName is not set")
		}},
		{KMM: kmmWebhook + "validateModprobe: should pass when rawArgs has load and unload values and moduleName is not set",
			Differs: "modprobe arguments are checked as modprobe commands", Check: func(t *testing.T) {
				errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{RawArgs: &v1beta1.ModprobeArgs{Load: []string{"arg"}, Unload: []string{"arg"}}}))
				refused(t, errs, pContainer+".modprobe.rawArgs.unload", "the unload arguments must remove modules: add -r")
				assert.Len(t, errs, 1, "the load arguments are a modprobe command: %v", errs)
				accepted(t, v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{RawArgs: &v1beta1.ModprobeArgs{Load: []string{"arg"}, Unload: []string{"-r", "arg"}}})))
			}},
		{KMM: kmmWebhook + "validateModprobe: should pass when modprobe has moduleName and rawArgs are not set", Check: func(t *testing.T) {
			accepted(t, v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{ModuleName: "module-name"})))
		}},
		{KMM: kmmWebhook + "validateModprobe: should fail when ModulesLoadingOrder is defined but is length is < 2", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{ModuleName: "module-name", ModulesLoadingOrder: []string{"test"}}))
			refused(t, errs, pContainer+".modprobe.modulesLoadingOrder", "at least two modules")
		}},
		{KMM: kmmWebhook + "validateModprobe: should fail when ModulesLoadingOrder is defined but moduleName is empty", Check: func(t *testing.T) {
			// An empty list counts as defined (KMM checks for nil).
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{ModulesLoadingOrder: []string{}}))
			refused(t, errs, pContainer+".modprobe.modulesLoadingOrder", "at least two modules")
			refused(t, errs, pContainer+".modprobe.moduleName", "required when modulesLoadingOrder is set")
			// and a manifest's `modulesLoadingOrder: []` too.
			m, err := v1beta1.DecodeModule([]byte(`apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: mod, namespace: ns}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: mod-name, modulesLoadingOrder: []}
      kernelMappings: [{regexp: valid-regexp, containerImage: "image-url:mytag"}]
`))
			require.NoError(t, err)
			refused(t, v1beta1.Validate(m), pContainer+".modprobe.modulesLoadingOrder", "at least two modules")
		}},
		{KMM: kmmWebhook + "validateModprobe: should fail when ModulesLoadingOrder is defined but its first element is not moduleName", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{ModulesLoadingOrder: []string{"test1", "test2"}}))
			refused(t, errs, pContainer+".modprobe.moduleName", "required when modulesLoadingOrder is set")
			errs = v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{ModuleName: "test0", ModulesLoadingOrder: []string{"test1", "test2"}}))
			refused(t, errs, pContainer+".modprobe.modulesLoadingOrder[0]", `the first entry must be moduleName "test0"`)
		}},
		{KMM: kmmWebhook + "validateModprobe: should fail when ModulesLoadingOrder contains duplicates", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withModprobe(v1beta1.ModprobeSpec{ModuleName: "module-name", ModulesLoadingOrder: []string{"module-name", "test", "test"}}))
			refused(t, errs, pContainer+".modprobe.modulesLoadingOrder[2]", "Duplicate value")
		}},

		// validateModule
		{KMM: kmmWebhook + "validateModule: should work as expected: not too long", Check: func(t *testing.T) {
			m := validModule()
			m.Name, m.Namespace = "name", "ns"
			accepted(t, v1beta1.Validate(m))
		}},
		{KMM: kmmWebhook + "validateModule: should work as expected: too long", Check: func(t *testing.T) {
			m := validModule()
			m.Name, m.Namespace = strings.Repeat("a", 21), strings.Repeat("a", 21)
			refused(t, v1beta1.Validate(m), "metadata.name", "at most 41 are allowed")
		}},
		{KMM: kmmWebhook + "validateModule: should pass when moduleLoader is not defined", Check: func(t *testing.T) {
			m := validModule()
			m.Spec.ModuleLoader = nil
			accepted(t, v1beta1.Validate(m))
		}},

		// ValidateCreate
		{KMM: kmmWebhook + "ValidateCreate: should pass when all conditions are met", Check: func(t *testing.T) {
			accepted(t, v1beta1.Validate(validModule()))
		}},
		{KMM: kmmWebhook + "ValidateCreate: should fail when validating kernel mappings regexps", Check: func(t *testing.T) {
			errs := v1beta1.Validate(withContainer(v1beta1.ModuleLoaderContainerSpec{KernelMappings: []v1beta1.KernelMapping{{Regexp: "*-invalid-regexp"}}}))
			refused(t, errs, pContainer+".kernelMappings[0].regexp", "does not compile")
		}},

		// ValidateUpdate
		{KMM: kmmWebhook + "ValidateUpdate: should pass when all conditions are met",
			Differs: "modprobe arguments are checked as modprobe commands", Check: func(t *testing.T) {
				older := withContainer(v1beta1.ModuleLoaderContainerSpec{Modprobe: v1beta1.ModprobeSpec{ModuleName: "module-name"},
					ContainerImage: "image-url:mytag", KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp"}}})
				newer := withContainer(v1beta1.ModuleLoaderContainerSpec{Modprobe: v1beta1.ModprobeSpec{RawArgs: &v1beta1.ModprobeArgs{Load: []string{"arg-1"}, Unload: []string{"arg-1"}}},
					ContainerImage: "image-url:mytag", KernelMappings: []v1beta1.KernelMapping{{Regexp: "valid-regexp"}}})
				errs := v1beta1.ValidateUpdate(older, newer)
				refused(t, errs, pContainer+".modprobe.rawArgs.unload", "must remove modules: add -r")
				assert.Len(t, errs, 1, "%v", errs)
				newer.Spec.ModuleLoader.Container.Modprobe.RawArgs.Unload = []string{"-r", "arg-1"}
				accepted(t, v1beta1.ValidateUpdate(older, newer))
			}},
		{KMM: kmmWebhook + "ValidateUpdate: should fail when validating kernel mappings regexps", Check: func(t *testing.T) {
			newer := withContainer(v1beta1.ModuleLoaderContainerSpec{KernelMappings: []v1beta1.KernelMapping{{Regexp: "*-invalid-regexp"}}})
			refused(t, v1beta1.ValidateUpdate(&v1beta1.Module{}, newer), pContainer+".kernelMappings[0].regexp", "does not compile")
		}},
		{KMM: kmmWebhook + "ValidateUpdate: version updates: v1 to empty", Check: versionUpdate("v1", "", true)},
		{KMM: kmmWebhook + "ValidateUpdate: version updates: empty to v2", Check: versionUpdate("", "v2", true)},
		{KMM: kmmWebhook + "ValidateUpdate: version updates: empty to empty", Check: versionUpdate("", "", false)},
		{KMM: kmmWebhook + "ValidateUpdate: version updates: v1 to v2", Check: versionUpdate("v1", "v2", false)},
		// ValidateDelete is not carried over: KMM registers its webhook for
		// create and update only, so its delete handler never runs.

		// validateTolerations
		{KMM: kmmWebhook + "validateTolerations: should fail when Module has an invalid toleration effect", Check: func(t *testing.T) {
			refused(t, tolerations(
				corev1.Toleration{Key: "Test-Key1", Operator: corev1.TolerationOpEqual, Value: "Test-Value1", Effect: corev1.TaintEffectPreferNoSchedule},
				corev1.Toleration{Key: "Test-Key2", Operator: corev1.TolerationOpExists, Effect: "Invalid-Effect"}),
				"spec.tolerations[1].effect", "Unsupported value")
		}},
		{KMM: kmmWebhook + "validateTolerations: should fail when Module has an invalid toleration operator", Check: func(t *testing.T) {
			refused(t, tolerations(
				corev1.Toleration{Key: "Test-Key1", Operator: corev1.TolerationOpEqual, Value: "Test-Value1", Effect: corev1.TaintEffectPreferNoSchedule},
				corev1.Toleration{Key: "Test-Key2", Operator: "Invalid-operator-value", Value: "Test-Value2", Effect: corev1.TaintEffectNoExecute}),
				"spec.tolerations[1].operator", "Unsupported value")
		}},
		{KMM: kmmWebhook + "validateTolerations: should fail when toleration has non empty value and Exists operator", Check: func(t *testing.T) {
			refused(t, tolerations(
				corev1.Toleration{Key: "Test-Key1", Operator: corev1.TolerationOpEqual, Value: "Test-Value1", Effect: corev1.TaintEffectPreferNoSchedule},
				corev1.Toleration{Key: "Test-Key2", Operator: corev1.TolerationOpExists, Value: "Test-Value2", Effect: corev1.TaintEffectNoExecute}),
				"spec.tolerations[1].value", "value must be empty")
		}},
		{KMM: kmmWebhook + "validateTolerations: should work when all tolerations have valid effects", Check: func(t *testing.T) {
			accepted(t, tolerations(
				corev1.Toleration{Key: "Test-Key1", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectPreferNoSchedule},
				corev1.Toleration{Key: "Test-Key2", Operator: corev1.TolerationOpEqual, Value: "Test-Value", Effect: corev1.TaintEffectNoSchedule},
				corev1.Toleration{Key: "Test-Key3", Operator: corev1.TolerationOpEqual, Value: "Test-Value", Effect: corev1.TaintEffectNoExecute}))
		}},
		{KMM: kmmWebhook + "validateTolerations: should fail when toleration has an invalid key format", Check: func(t *testing.T) {
			refused(t, tolerations(corev1.Toleration{Key: "Invalid Key!", Operator: corev1.TolerationOpEqual, Value: "Test-Value"}),
				"spec.tolerations[0].key", "name part must consist of")
		}},
		{KMM: kmmWebhook + "validateTolerations: should fail when toleration has empty key with an invalid operator", Check: func(t *testing.T) {
			refused(t, tolerations(corev1.Toleration{Operator: corev1.TolerationOpEqual, Value: "Test-Value"}),
				"spec.tolerations[0].operator", "operator must be Exists when key is empty")
		}},
		{KMM: kmmWebhook + "validateTolerations: should fail when TolerationSeconds is set but Effect is not NoExecute", Check: func(t *testing.T) {
			refused(t, tolerations(corev1.Toleration{Key: "Test-Key", Operator: corev1.TolerationOpEqual, Value: "Test-Value",
				Effect: corev1.TaintEffectNoSchedule, TolerationSeconds: &tolSecs}),
				"spec.tolerations[0].effect", "effect must be 'NoExecute' when `tolerationSeconds` is set")
		}},
		{KMM: kmmWebhook + "validateTolerations: should pass when TolerationSeconds is set with NoExecute effect", Check: func(t *testing.T) {
			accepted(t, tolerations(corev1.Toleration{Key: "Test-Key", Operator: corev1.TolerationOpEqual, Value: "Test-Value",
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &tolSecs}))
		}},
		{KMM: kmmWebhook + "validateTolerations: should fail when an invalid effect is provided", Check: func(t *testing.T) {
			refused(t, tolerations(corev1.Toleration{Key: "Test-Key", Operator: corev1.TolerationOpExists, Effect: "Invalid-Effect"}),
				"spec.tolerations[0].effect", "Unsupported value")
		}},
		{KMM: kmmWebhook + "validateTolerations: should fail when operator is not Equal or Exists", Check: func(t *testing.T) {
			refused(t, tolerations(corev1.Toleration{Key: "Test-Key", Operator: "InvalidOperator", Value: "Test-Value"}),
				"spec.tolerations[0].operator", "Unsupported value")
		}},
		{KMM: kmmWebhook + "validateTolerations: should pass with an empty toleration list", Check: func(t *testing.T) {
			accepted(t, tolerations())
		}},

		// validateDRA
		{KMM: kmmWebhook + "validateDRA: should be a no-op when spec.dra is nil", Check: func(t *testing.T) {
			accepted(t, v1beta1.Validate(validModule(), v1beta1.WithKubernetesVersion("1.33")))
		}},
		{KMM: kmmWebhook + "validateDRA: Kubernetes version gate: k8s 1.33 rejects", Check: kubeGate("1.33", true)},
		{KMM: kmmWebhook + "validateDRA: Kubernetes version gate: k8s 1.34 accepts", Check: kubeGate("v1.34.2", false)},
		{KMM: kmmWebhook + "validateDRA: Kubernetes version gate: k8s 1.35 accepts", Check: kubeGate("1.35", false)},
		{KMM: kmmWebhook + "validateDRA: Kubernetes version gate: k8s 2.0 accepts (future major)", Check: kubeGate("2.0", false)},
		{KMM: kmmWebhook + "validateDRA: Kubernetes version gate: k8s 0.99 rejects (old major)", Check: kubeGate("0.99", true)},
		{KMM: kmmWebhook + "validateDRA: Kubernetes version gate: nil version skips gate (hub webhook)", Check: kubeGate("", false)},
		{KMM: kmmWebhook + "validateDRA: should reject empty driverName", Check: func(t *testing.T) {
			d := draSpec()
			d.DriverName = ""
			refused(t, validateDRA(d), "spec.dra.driverName", "Required value")
		}},
		{KMM: kmmWebhook + "validateDRA: should reject invalid driverName", Check: func(t *testing.T) {
			d := draSpec()
			d.DriverName = "INVALID_NAME!"
			refused(t, validateDRA(d), "spec.dra.driverName", "a lowercase RFC 1123 subdomain")
		}},
		{KMM: kmmWebhook + "validateDRA: should accept valid driverName", Check: func(t *testing.T) {
			accepted(t, validateDRA(draSpec(), v1beta1.WithKubernetesVersion("1.34")))
		}},
		{KMM: kmmWebhook + "validateDRA: should reject duplicate deviceClasses names", Check: func(t *testing.T) {
			d := draSpec()
			d.DeviceClasses = []v1beta1.DRADeviceClass{{Name: "gpu"}, {Name: "gpu"}}
			refused(t, validateDRA(d), "spec.dra.deviceClasses[1].name", "Duplicate value")
		}},
		{KMM: kmmWebhook + "validateDRA: should reject invalid deviceClasses name", Check: func(t *testing.T) {
			d := draSpec()
			d.DeviceClasses = []v1beta1.DRADeviceClass{{Name: "INVALID!"}}
			refused(t, validateDRA(d), "spec.dra.deviceClasses[0].name", "a lowercase RFC 1123 subdomain")
		}},
		{KMM: kmmWebhook + "validateDRA: should accept valid deviceClasses", Check: func(t *testing.T) {
			d := draSpec()
			d.DeviceClasses = []v1beta1.DRADeviceClass{{Name: "gpu"}, {Name: "fpga"}}
			accepted(t, validateDRA(d))
		}},

		// validateHostPathVolumes
		{KMM: kmmWebhook + "validateHostPathVolumes: should accept empty volume list", Check: func(t *testing.T) {
			accepted(t, v1beta1.ValidateSpec(&v1beta1.ModuleSpec{Selector: map[string]string{},
				DevicePlugin: &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "dp:v1"}, Volumes: []corev1.Volume{}}}, field.NewPath("spec")))
		}},
		{KMM: kmmWebhook + "validateHostPathVolumes: should accept non-hostPath volumes", Check: func(t *testing.T) {
			vol := corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "my-cm"}}}}
			accepted(t, v1beta1.ValidateSpec(&v1beta1.ModuleSpec{Selector: map[string]string{},
				DevicePlugin: &v1beta1.DevicePluginSpec{Container: v1beta1.CommonContainerSpec{Image: "dp:v1"}, Volumes: []corev1.Volume{vol}}}, field.NewPath("spec")))
		}},
		{KMM: kmmWebhook + "validateHostPathVolumes: should accept hostPath volumes equal to /dev", Check: hostPath("/dev", true)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should accept hostPath volumes under /sys", Check: hostPath("/sys/class/net", true)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should accept hostPath volumes under /var", Check: hostPath("/var/lib/kubelet/device-plugins", true)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should accept hostPath volumes under /opt", Check: hostPath("/opt/lib/firmware", true)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should reject hostPath volumes outside allowed paths", Check: hostPath("/", false)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should reject hostPath volumes under /etc", Check: hostPath("/etc/config", false)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should reject hostPath with prefix trick like /devious", Check: hostPath("/devious", false)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should reject hostPath with path traversal like /dev/../etc", Check: hostPath("/dev/../etc/shadow", false)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should accept hostPath with redundant slashes under /sys", Check: hostPath("/sys//class//net", true)},
		{KMM: kmmWebhook + "validateHostPathVolumes: should include fieldPath in error message", Check: hostPath("/etc/secret", false)},
	})
}
