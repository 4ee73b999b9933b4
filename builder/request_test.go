package builder_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func module() *v1beta1.Module {
	return &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"},
		Spec: v1beta1.ModuleSpec{
			ImageRepoSecret: &corev1.LocalObjectReference{Name: "pull"},
			Selector:        map[string]string{"feature.node.kubernetes.io/nic": "true"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe: v1beta1.ModprobeSpec{ModuleName: "nic", FirmwarePath: "/firmware"},
				KernelMappings: []v1beta1.KernelMapping{{
					Regexp: "^.+$", ContainerImage: "registry.example.com/nic:${KERNEL_FULL_VERSION}",
					Build: &v1beta1.Build{
						DockerfileConfigMap:  &corev1.LocalObjectReference{Name: "nic-dockerfile"},
						BuildArgs:            []v1beta1.BuildArg{{Name: "MOD_NAMESPACE", Value: "mine"}, {Name: "A", Value: "1"}},
						Secrets:              []corev1.LocalObjectReference{{Name: "token"}},
						BaseImageRegistryTLS: v1beta1.TLSOptions{InsecureSkipTLSVerify: true},
					},
				}},
			}},
		},
	}
}

func TestNewRequest(t *testing.T) {
	rec, err := resolve(t, module(), "6.1.0-56-amd64")
	require.NoError(t, err)
	req, err := builder.NewRequest(rec, "FROM scratch\n")
	require.NoError(t, err)
	assert.Equal(t, "registry.example.com/nic:6.1.0-56-amd64", req.Image)
	assert.Equal(t, "pull", req.PullSecret.Name)
	assert.True(t, req.BaseImageRegistryTLS.InsecureSkipTLSVerify)
	assert.Equal(t, map[string]string{"feature.node.kubernetes.io/nic": "true"}, req.NodeSelector, "the Module's selector when the build has none")
	assert.Equal(t, "/firmware", req.FirmwarePath)
	assert.Equal(t, "nic-build-6-1-0-56-amd64", req.Name(1))
	assert.Equal(t, "nic-build-6-1-0-56-amd64-2", req.Name(2))
	acme := req
	acme.Identity = identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
	assert.Equal(t, identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}.Owner("drivers", "nic").BuildName("6-1-0-56-amd64", 2), acme.Name(2))
	assert.Equal(t, "nic", builder.Labels(acme)["nic.acme.io/nicdriver.name"])
	assert.Equal(t, req.Hash(), acme.Hash(), "the identity names the build, it does not change the image")
	acme.Identity.Kind = ""
	assert.ErrorContains(t, acme.Validate(), `kind is empty: domain "nic.acme.io"`)

	// KMM's override rule: injected args replace user args in place, the
	// rest are appended in sorted order.
	var got []string
	for _, a := range req.Args() {
		got = append(got, a.Name+"="+a.Value)
	}
	assert.Equal(t, []string{"MOD_NAMESPACE=drivers", "A=1", "KERNEL_FULL_VERSION=6.1.0-56-amd64", "KERNEL_VERSION=6.1.0-56-amd64",
		"KERNEL_X=6", "KERNEL_XYZ=6.1.0", "KERNEL_Y=1", "KERNEL_Z=0", "MOD_NAME=nic"}, got)

	// DTK_AUTO only when the Dockerfile mentions it.
	req.DTKImage = "dtk@sha256:1"
	assert.NotContains(t, req.Args(), v1beta1.BuildArg{Name: "DTK_AUTO", Value: "dtk@sha256:1"})
	req.Dockerfile = "ARG DTK_AUTO\nFROM ${DTK_AUTO}\n"
	assert.Contains(t, req.Args(), v1beta1.BuildArg{Name: "DTK_AUTO", Value: "dtk@sha256:1"})

	noBuild := module()
	noBuild.Spec.ModuleLoader.Container.KernelMappings[0].Build = nil
	rec, err = resolve(t, noBuild, "6.1.0-56-amd64")
	require.NoError(t, err)
	_, err = builder.NewRequest(rec, "FROM scratch\n")
	assert.ErrorContains(t, err, "has no build for kernel 6.1.0-56-amd64")
}

func TestHashChangesWithWhatChangesTheOutput(t *testing.T) {
	rec, err := resolve(t, module(), "6.1.0-56-amd64")
	require.NoError(t, err)
	base, err := builder.NewRequest(rec, "FROM scratch\n")
	require.NoError(t, err)
	h := base.Hash()
	assert.Equal(t, h, base.Hash(), "stable")
	for name, mutate := range map[string]func(*builder.Request){
		"dockerfile":     func(r *builder.Request) { r.Dockerfile += "RUN true\n" },
		"build arg":      func(r *builder.Request) { r.BuildArgs = append(r.BuildArgs, v1beta1.BuildArg{Name: "B", Value: "2"}) },
		"secret version": func(r *builder.Request) { r.SecretVersions = map[string]string{"token": "42"} },
		"base TLS":       func(r *builder.Request) { r.BaseImageRegistryTLS = v1beta1.TLSOptions{} },
		"image":          func(r *builder.Request) { r.Image += "-x" },
	} {
		r := base
		mutate(&r)
		assert.NotEqual(t, h, r.Hash(), name)
	}
}

func TestDockerfileFromConfigMap(t *testing.T) {
	d, err := builder.DockerfileFromConfigMap(&corev1.ConfigMap{Data: map[string]string{"dockerfile": "FROM scratch\n"}})
	require.NoError(t, err)
	assert.Equal(t, "FROM scratch\n", d)
	_, err = builder.DockerfileFromConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"Dockerfile": "x"}})
	assert.ErrorContains(t, err, `configmap ns/cm: key "dockerfile" is missing or empty`)
}

func TestRetryPolicy(t *testing.T) {
	p := builder.RetryPolicy{}
	assert.Equal(t, 3, p.Attempts())
	assert.Equal(t, 30*time.Second, p.Delay(2))
	assert.Equal(t, 60*time.Second, p.Delay(3))
	p = builder.RetryPolicy{Backoff: 4 * time.Minute, MaxBackoff: 10 * time.Minute}
	assert.Equal(t, 8*time.Minute, p.Delay(3))
	assert.Equal(t, 10*time.Minute, p.Delay(9))
}

// resolve resolves m for kernel with a new Mapper.
func resolve(t *testing.T, m *v1beta1.Module, kernel string) (*kernelmap.Record, error) {
	t.Helper()
	mapper, err := kernelmap.New()
	require.NoError(t, err)
	return mapper.Resolve(m, kernel)
}
