package kernelmap

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/internal/envsubst"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func ref(n string) *corev1.LocalObjectReference { return &corev1.LocalObjectReference{Name: n} }

// testModule is a Module with a catch-all regexp mapping and nothing else.
func testModule() *v1beta1.Module {
	return &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "mymod", Namespace: "myns"},
		Spec: v1beta1.ModuleSpec{
			Selector: map[string]string{"kubernetes.io/os": "linux"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{
				Container: v1beta1.ModuleLoaderContainerSpec{
					Modprobe:       v1beta1.ModprobeSpec{ModuleName: "mymod"},
					ContainerImage: "quay.io/org/${MOD_NAME}:${KERNEL_FULL_VERSION}",
					KernelMappings: []v1beta1.KernelMapping{{Regexp: "^.+$"}},
				},
			},
		},
	}
}

func resolveOne(t *testing.T, mod *v1beta1.Module, kernel string) *Record {
	t.Helper()
	rec, err := newMapper(t).Resolve(mod, kernel)
	require.NoError(t, err)
	return rec
}

func TestResolveImage(t *testing.T) {
	tests := []struct {
		name           string
		containerImage string
		mappingImage   string
		kernel         string
		want           string
	}{
		{"container image", "quay.io/org/${MOD_NAME}:${KERNEL_FULL_VERSION}", "", "6.1.0-56-amd64", "quay.io/org/mymod:6.1.0-56-amd64"},
		{"mapping image wins", "quay.io/org/a:${KERNEL_FULL_VERSION}", "quay.io/org/b:${KERNEL_VERSION}", "6.1.0-56-amd64", "quay.io/org/b:6.1.0-56-amd64"},
		{"mapping only", "", "quay.io/org/b:v1", "6.1.0-56-amd64", "quay.io/org/b:v1"},
		{"bare variables", "quay.io/$MOD_NAMESPACE/$MOD_NAME:$KERNEL_XYZ", "", "6.0.15-300.fc37.x86_64", "quay.io/myns/mymod:6.0.15"},
		{"components", "r.io/m:${KERNEL_X}-${KERNEL_Y}-${KERNEL_Z}", "", "5.14.0-284.el9.x86_64", "r.io/m:5-14-0"},
		{"normalised kernel in tag", "r.io/m:${KERNEL_FULL_VERSION}", "", "6.6.0+rpt-rpi-v8", "r.io/m:6.6.0_rpt-rpi-v8"},
		{"trailing plus trimmed", "r.io/m:${KERNEL_FULL_VERSION}", "", "6.8.0-1+", "r.io/m:6.8.0-1"},
		{"registry port", "r.io:5000/m:${KERNEL_FULL_VERSION}", "", "6.1.0-56-amd64", "r.io:5000/m:6.1.0-56-amd64"},
		{"digest", "r.io/m@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "", "6.1.0-56-amd64", "r.io/m@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		{"default form", "r.io/m:${KERNEL_FULL_VERSION:-none}", "", "6.1.0-56-amd64", "r.io/m:6.1.0-56-amd64"},
		{"no variables", "r.io/m:fixed", "", "6.1.0-56-amd64", "r.io/m:fixed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mod := testModule()
			mod.Spec.ModuleLoader.Container.ContainerImage = tc.containerImage
			mod.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = tc.mappingImage
			rec := resolveOne(t, mod, tc.kernel)
			assert.Equal(t, tc.want, rec.Image())
		})
	}
}

func TestResolveTemplateErrors(t *testing.T) {
	tests := []struct {
		name           string
		containerImage string
		mappingImage   string
		sign           *v1beta1.Sign
		wantField      string
		wantInError    []string
	}{
		{"unknown variable in container image", "r.io/m:${KERNEL_FOO}", "", nil,
			"spec.moduleLoader.container.containerImage", []string{`unknown variable "KERNEL_FOO"`}},
		{"unknown variable in mapping image", "", "r.io/m:$OS_VERSION", nil,
			"spec.moduleLoader.container.kernelMappings[0].containerImage", []string{`unknown variable "OS_VERSION"`}},
		{"unterminated", "r.io/m:${KERNEL_FULL_VERSION", "", nil,
			"spec.moduleLoader.container.containerImage", []string{"unterminated ${"}},
		{"no tag after substitution", "r.io/m", "", nil,
			"spec.moduleLoader.container.containerImage", []string{"neither a tag nor a digest"}},
		{"invalid reference after substitution", "r.io/UPPER:${KERNEL_X}", "", nil,
			"spec.moduleLoader.container.containerImage", []string{"not a valid image reference"}},
		{"unknown variable in unsignedImage", "r.io/m:v1", "", &v1beta1.Sign{UnsignedImage: "r.io/m:${NOPE}", FilesToSign: []string{"/opt/x.ko"}},
			"spec.moduleLoader.container.sign.unsignedImage", []string{`unknown variable "NOPE"`}},
		{"unknown variable in filesToSign", "r.io/m:v1", "", &v1beta1.Sign{FilesToSign: []string{"/opt/a.ko", "/opt/${KVER}/b.ko"}},
			"spec.moduleLoader.container.sign.filesToSign[1]", []string{`unknown variable "KVER"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mod := testModule()
			mod.Spec.ModuleLoader.Container.ContainerImage = tc.containerImage
			mod.Spec.ModuleLoader.Container.KernelMappings[0].ContainerImage = tc.mappingImage
			mod.Spec.ModuleLoader.Container.Sign = tc.sign
			_, err := newMapper(t).Resolve(mod, "6.1.0-56-amd64")
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tc.wantField, fe.Field)
			for _, s := range tc.wantInError {
				assert.Contains(t, err.Error(), s)
			}
			assert.Contains(t, err.Error(), tc.wantField, "the message names the field")
		})
	}
}

func TestResolveUnknownVariableIsEnvsubstError(t *testing.T) {
	mod := testModule()
	mod.Spec.ModuleLoader.Container.ContainerImage = "r.io/m:${KERNEL_FOO}"
	_, err := newMapper(t).Resolve(mod, "6.1.0-56-amd64")
	var ee *envsubst.Error
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, "KERNEL_FOO", ee.Variable)
}

func TestResolveOutcomes(t *testing.T) {
	m := newMapper(t)
	mod := testModule()
	mod.Spec.ModuleLoader.Container.KernelMappings = []v1beta1.KernelMapping{{Literal: "6.1.0-56-amd64"}}
	_, err := m.Resolve(mod, "6.1.0-57-amd64")
	assert.ErrorIs(t, err, ErrNoMapping)

	mod.Spec.ModuleLoader = nil
	_, err = m.Resolve(mod, "6.1.0-56-amd64")
	assert.ErrorIs(t, err, ErrNoModuleLoader)

	short := testModule()
	_, err = m.Resolve(short, "6.1")
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "node.status.nodeInfo.kernelVersion", fe.Field)
	assert.Contains(t, err.Error(), "expected at least three components")

	// "No mapping" wins over a bad kernel: the node is simply not targeted.
	short.Spec.ModuleLoader.Container.KernelMappings = []v1beta1.KernelMapping{{Literal: "5.0.0"}}
	_, err = m.Resolve(short, "6.1")
	assert.ErrorIs(t, err, ErrNoMapping)
}

func TestResolveModuleLevelFields(t *testing.T) {
	mod := testModule()
	c := &mod.Spec.ModuleLoader.Container
	c.Modprobe = v1beta1.ModprobeSpec{ModuleName: "mymod", Parameters: []string{"a=1"}, FirmwarePath: "/fw"}
	c.Version = "1.2"
	c.ImagePullPolicy = corev1.PullAlways
	mod.Spec.ModuleLoader.ServiceAccountName = "sa"
	mod.Spec.ImageRepoSecret = ref("pull")
	mod.Spec.Tolerations = []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}}
	rec := resolveOne(t, mod, "6.1.0-56-amd64")

	assert.Equal(t, "mymod", rec.ModuleName())
	assert.Equal(t, "myns", rec.Namespace())
	assert.Equal(t, 0, rec.MappingIndex())
	assert.Equal(t, "/opt", rec.Modprobe().DirName, "dirName defaults to /opt")
	assert.Equal(t, []string{"a=1"}, rec.Modprobe().Parameters)
	assert.Equal(t, "/fw", rec.Modprobe().FirmwarePath)
	assert.Equal(t, "1.2", rec.ModuleVersion())
	assert.Equal(t, corev1.PullAlways, rec.ImagePullPolicy())
	assert.Equal(t, "sa", rec.ServiceAccountName())
	assert.Equal(t, ref("pull"), rec.ImageRepoSecret())
	assert.Equal(t, map[string]string{"kubernetes.io/os": "linux"}, rec.Selector())
	tol := rec.Tolerations()
	require.Len(t, tol, 4)
	assert.Equal(t, "gpu", tol[0].Key)
	assert.Equal(t, InternalTolerations(), tol[1:])
	assert.Nil(t, rec.Build())
	assert.Nil(t, rec.Sign())
	assert.Nil(t, rec.InTreeModulesToRemove())
}

func TestResolveRegistryTLS(t *testing.T) {
	mod := testModule()
	mod.Spec.ModuleLoader.Container.RegistryTLS = v1beta1.TLSOptions{Insecure: true}
	assert.Equal(t, v1beta1.TLSOptions{Insecure: true}, resolveOne(t, mod, "6.1.0-1-amd64").RegistryTLS())

	mod.Spec.ModuleLoader.Container.KernelMappings[0].RegistryTLS = &v1beta1.TLSOptions{InsecureSkipTLSVerify: true}
	assert.Equal(t, v1beta1.TLSOptions{InsecureSkipTLSVerify: true}, resolveOne(t, mod, "6.1.0-1-amd64").RegistryTLS(),
		"a mapping's TLS replaces the container's as a whole")

	mod.Spec.ModuleLoader.Container.KernelMappings[0].RegistryTLS = &v1beta1.TLSOptions{}
	assert.Equal(t, v1beta1.TLSOptions{}, resolveOne(t, mod, "6.1.0-1-amd64").RegistryTLS(),
		"an explicit empty TLS in the mapping turns the container's off")
}

func TestResolveBuild(t *testing.T) {
	containerBuild := &v1beta1.Build{
		DockerfileConfigMap:  ref("c-df"),
		BuildArgs:            []v1beta1.BuildArg{{Name: "B", Value: "c"}, {Name: "A", Value: "c"}},
		Secrets:              []corev1.LocalObjectReference{{Name: "c-s"}},
		BaseImageRegistryTLS: v1beta1.TLSOptions{Insecure: true},
		KanikoParams:         &v1beta1.KanikoParams{Tag: "c-tag"},
		Selector:             map[string]string{"c": "1"},
	}
	mappingBuild := &v1beta1.Build{
		DockerfileConfigMap:  ref("m-df"),
		BuildArgs:            []v1beta1.BuildArg{{Name: "Z", Value: "m"}, {Name: "A", Value: "m"}, {Name: "M", Value: "m"}},
		Secrets:              []corev1.LocalObjectReference{{Name: "m-s"}},
		BaseImageRegistryTLS: v1beta1.TLSOptions{InsecureSkipTLSVerify: true},
		KanikoParams:         &v1beta1.KanikoParams{Tag: "m-tag"},
		Selector:             map[string]string{"m": "1"},
	}
	tests := []struct {
		name      string
		container *v1beta1.Build
		mapping   *v1beta1.Build
		want      *v1beta1.Build
	}{
		{"none", nil, nil, nil},
		{"container only", containerBuild, nil, containerBuild},
		{"mapping only", nil, mappingBuild, mappingBuild},
		{"both", containerBuild, mappingBuild, &v1beta1.Build{
			DockerfileConfigMap:  ref("m-df"),
			BuildArgs:            []v1beta1.BuildArg{{Name: "B", Value: "c"}, {Name: "A", Value: "m"}, {Name: "M", Value: "m"}, {Name: "Z", Value: "m"}},
			Secrets:              []corev1.LocalObjectReference{{Name: "c-s"}, {Name: "m-s"}},
			BaseImageRegistryTLS: v1beta1.TLSOptions{InsecureSkipTLSVerify: true},
			KanikoParams:         &v1beta1.KanikoParams{Tag: "m-tag"},
			Selector:             map[string]string{"m": "1"},
		}},
		{"both, mapping sets only args", containerBuild, &v1beta1.Build{BuildArgs: []v1beta1.BuildArg{{Name: "B", Value: "m"}}}, &v1beta1.Build{
			DockerfileConfigMap:  ref("c-df"),
			BuildArgs:            []v1beta1.BuildArg{{Name: "B", Value: "m"}, {Name: "A", Value: "c"}},
			Secrets:              []corev1.LocalObjectReference{{Name: "c-s"}},
			BaseImageRegistryTLS: v1beta1.TLSOptions{Insecure: true},
			KanikoParams:         &v1beta1.KanikoParams{Tag: "c-tag"},
			Selector:             map[string]string{"c": "1"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mod := testModule()
			mod.Spec.ModuleLoader.Container.Build = tc.container.DeepCopy()
			mod.Spec.ModuleLoader.Container.KernelMappings[0].Build = tc.mapping.DeepCopy()
			before := mod.DeepCopy()
			rec := resolveOne(t, mod, "6.1.0-56-amd64")
			assert.Equal(t, tc.want, rec.Build())
			assert.Equal(t, before, mod, "resolving does not modify the Module")
		})
	}
}

func TestResolveBuildArgsNotTemplated(t *testing.T) {
	mod := testModule()
	mod.Spec.ModuleLoader.Container.Build = &v1beta1.Build{
		DockerfileConfigMap: ref("df"),
		BuildArgs:           []v1beta1.BuildArg{{Name: "K", Value: "${KERNEL_FULL_VERSION}"}, {Name: "D", Value: "$UNKNOWN"}},
	}
	rec := resolveOne(t, mod, "6.1.0-56-amd64")
	assert.Equal(t, []v1beta1.BuildArg{{Name: "K", Value: "${KERNEL_FULL_VERSION}"}, {Name: "D", Value: "$UNKNOWN"}}, rec.Build().BuildArgs,
		"as in KMM, build args reach the builder verbatim; the kernel arrives as injected build args")
}

func TestMergeBuildArgs(t *testing.T) {
	a := func(kv ...string) []v1beta1.BuildArg {
		var out []v1beta1.BuildArg
		for i := 0; i < len(kv); i += 2 {
			out = append(out, v1beta1.BuildArg{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tests := []struct {
		name                  string
		base, overrides, want []v1beta1.BuildArg
	}{
		{"both empty", nil, nil, nil},
		{"base only", a("X", "1"), nil, a("X", "1")},
		{"overrides only, sorted", nil, a("Z", "1", "A", "2"), a("A", "2", "Z", "1")},
		{"replace in place", a("X", "1", "Y", "2"), a("X", "9"), a("X", "9", "Y", "2")},
		{"new names appended sorted after base", a("M", "1"), a("Z", "z", "A", "a"), a("M", "1", "A", "a", "Z", "z")},
		{"base order kept, not sorted", a("Z", "1", "A", "2"), nil, a("Z", "1", "A", "2")},
		{"last override of a name wins", nil, a("A", "1", "A", "2"), a("A", "2")},
		{"empty value overrides", a("A", "1"), a("A", ""), a("A", "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			baseCopy := append([]v1beta1.BuildArg(nil), tc.base...)
			assert.Equal(t, tc.want, MergeBuildArgs(tc.base, tc.overrides))
			assert.Equal(t, baseCopy, tc.base, "base is not modified")
		})
	}
}

func TestResolveSign(t *testing.T) {
	containerSign := &v1beta1.Sign{
		UnsignedImage:            "r.io/u:${KERNEL_FULL_VERSION}",
		UnsignedImageRegistryTLS: v1beta1.TLSOptions{Insecure: true},
		KeySecret:                ref("c-key"),
		CertSecret:               ref("c-cert"),
		FilesToSign:              []string{"/opt/lib/modules/${KERNEL_FULL_VERSION}/a.ko"},
	}
	tests := []struct {
		name      string
		container *v1beta1.Sign
		mapping   *v1beta1.Sign
		want      *v1beta1.Sign
	}{
		{"none", nil, nil, nil},
		{"container only, templated", containerSign, nil, &v1beta1.Sign{
			UnsignedImage:            "r.io/u:6.1.0-56-amd64",
			UnsignedImageRegistryTLS: v1beta1.TLSOptions{Insecure: true},
			KeySecret:                ref("c-key"),
			CertSecret:               ref("c-cert"),
			FilesToSign:              []string{"/opt/lib/modules/6.1.0-56-amd64/a.ko"},
		}},
		{"both", containerSign, &v1beta1.Sign{
			UnsignedImage: "r.io/m-u:${MOD_NAME}-${KERNEL_XYZ}",
			KeySecret:     ref("m-key"),
			FilesToSign:   []string{"/opt/${MOD_NAME}/b.ko"},
		}, &v1beta1.Sign{
			UnsignedImage:            "r.io/m-u:mymod-6.1.0",
			UnsignedImageRegistryTLS: v1beta1.TLSOptions{Insecure: true},
			KeySecret:                ref("m-key"),
			CertSecret:               ref("c-cert"),
			FilesToSign:              []string{"/opt/lib/modules/6.1.0-56-amd64/a.ko", "/opt/mymod/b.ko"},
		}},
		{"mapping TLS wins when set", containerSign, &v1beta1.Sign{UnsignedImageRegistryTLS: v1beta1.TLSOptions{InsecureSkipTLSVerify: true}}, &v1beta1.Sign{
			UnsignedImage:            "r.io/u:6.1.0-56-amd64",
			UnsignedImageRegistryTLS: v1beta1.TLSOptions{InsecureSkipTLSVerify: true},
			KeySecret:                ref("c-key"),
			CertSecret:               ref("c-cert"),
			FilesToSign:              []string{"/opt/lib/modules/6.1.0-56-amd64/a.ko"},
		}},
		{"mapping only", nil, &v1beta1.Sign{KeySecret: ref("k"), CertSecret: ref("c"), FilesToSign: []string{"/opt/x.ko"}},
			&v1beta1.Sign{KeySecret: ref("k"), CertSecret: ref("c"), FilesToSign: []string{"/opt/x.ko"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mod := testModule()
			mod.Spec.ModuleLoader.Container.Sign = tc.container.DeepCopy()
			mod.Spec.ModuleLoader.Container.KernelMappings[0].Sign = tc.mapping.DeepCopy()
			before := mod.DeepCopy()
			assert.Equal(t, tc.want, resolveOne(t, mod, "6.1.0-56-amd64").Sign())
			assert.Equal(t, before, mod)
		})
	}
}

func TestResolveFilesToSignFieldOfMappingItem(t *testing.T) {
	mod := testModule()
	mod.Spec.ModuleLoader.Container.Sign = &v1beta1.Sign{FilesToSign: []string{"/opt/a.ko"}}
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Sign = &v1beta1.Sign{FilesToSign: []string{"/opt/b.ko", "/opt/${BAD}.ko"}}
	_, err := newMapper(t).Resolve(mod, "6.1.0-56-amd64")
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "spec.moduleLoader.container.kernelMappings[0].sign.filesToSign[1]", fe.Field)
}

func TestResolveInTreeModules(t *testing.T) {
	tests := []struct {
		name    string
		cList   []string
		cSingle string
		mList   []string
		mSingle string
		want    []string
	}{
		{"none", nil, "", nil, "", nil},
		{"container list", []string{"a", "b"}, "", nil, "", []string{"a", "b"}},
		{"mapping list wins", []string{"a"}, "", []string{"m"}, "", []string{"m"}},
		{"empty mapping list wins over container", []string{"a"}, "", []string{}, "", []string{}},
		{"container single", nil, "s", nil, "", []string{"s"}},
		{"mapping single wins over container single", nil, "s", nil, "ms", []string{"ms"}},
		{"single replaces a list", []string{"a"}, "", nil, "ms", []string{"ms"}},
		{"container single replaces mapping list", nil, "s", []string{"m"}, "", []string{"s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mod := testModule()
			c := &mod.Spec.ModuleLoader.Container
			c.InTreeModulesToRemove, c.InTreeModuleToRemove = tc.cList, tc.cSingle
			c.KernelMappings[0].InTreeModulesToRemove, c.KernelMappings[0].InTreeModuleToRemove = tc.mList, tc.mSingle
			assert.Equal(t, tc.want, resolveOne(t, mod, "6.1.0-56-amd64").InTreeModulesToRemove())
		})
	}
}

func TestRecordIsImmutable(t *testing.T) {
	mod := testModule()
	c := &mod.Spec.ModuleLoader.Container
	c.InTreeModulesToRemove = []string{"a"}
	c.Build = &v1beta1.Build{DockerfileConfigMap: ref("df"), BuildArgs: []v1beta1.BuildArg{{Name: "A", Value: "1"}}}
	c.Sign = &v1beta1.Sign{KeySecret: ref("k"), CertSecret: ref("c"), FilesToSign: []string{"/opt/a.ko"}}
	c.Modprobe.Parameters = []string{"p=1"}
	mod.Spec.ImageRepoSecret = ref("pull")
	mod.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}}
	rec := resolveOne(t, mod, "6.1.0-56-amd64")
	want, err := rec.MarshalJSON()
	require.NoError(t, err)

	rec.Build().BuildArgs[0].Value = "changed"
	rec.Build().DockerfileConfigMap.Name = "changed"
	rec.Sign().FilesToSign[0] = "changed"
	rec.Sign().KeySecret.Name = "changed"
	rec.InTreeModulesToRemove()[0] = "changed"
	rec.Modprobe().Parameters[0] = "changed"
	rec.ImageRepoSecret().Name = "changed"
	rec.Selector()["x"] = "changed"
	rec.Tolerations()[0].Key = "changed"
	// The Module it came from changes too.
	c.Build.BuildArgs[0].Value = "changed"
	c.Sign.FilesToSign[0] = "changed"
	c.InTreeModulesToRemove[0] = "changed"
	c.Modprobe.Parameters[0] = "changed"
	mod.Spec.Selector["x"] = "changed"
	mod.Spec.Tolerations[0].Key = "changed"
	mod.Spec.ImageRepoSecret.Name = "changed"

	got, err := rec.MarshalJSON()
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))
	assert.NotContains(t, string(got), "changed")
}

func TestRecordJSON(t *testing.T) {
	rec := resolveOne(t, testModule(), "6.1.0-56-amd64+")
	got, err := rec.MarshalJSON()
	require.NoError(t, err)
	assert.JSONEq(t, `{
		"module": "mymod",
		"namespace": "myns",
		"kernel": {"version": "6.1.0-56-amd64", "normalized": "6.1.0-56-amd64", "xyz": "6.1.0", "dnsName": "6-1-0-56-amd64"},
		"mappingIndex": 0,
		"containerImage": "quay.io/org/mymod:6.1.0-56-amd64",
		"registryTLS": {},
		"modprobe": {"moduleName": "mymod", "dirName": "/opt"},
		"selector": {"kubernetes.io/os": "linux"},
		"tolerations": [
			{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
			{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
			{"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"}
		]
	}`, string(got))
}

func TestResolveSpecForEmbedders(t *testing.T) {
	mod := testModule()
	rec, err := newMapper(t).ResolveSpec("gpu-driver", "gpu-operator", &mod.Spec, "6.1.0-56-amd64")
	require.NoError(t, err)
	assert.Equal(t, "quay.io/org/gpu-driver:6.1.0-56-amd64", rec.Image())
	assert.Equal(t, "gpu-operator", rec.Namespace())
}
