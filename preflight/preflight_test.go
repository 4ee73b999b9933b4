package preflight_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/internal/kmodtest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/preflight"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

const ns = "drivers"

// env is the real registry, Debian's kernel tree and images built from
// its modules.
type env struct {
	*kmodtest.Env
	// repo is this test's repository on the registry.
	repo string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	k := kmodtest.New(t)
	return &env{Env: k, repo: k.Host + "/kmmkit-preflight/" + time.Now().Format("150405.000000")}
}

// modules are Debian modules, as files of an image's module directory.
func (e *env) modules(t *testing.T) []assemble.File {
	return e.Modules(t, "kernel/crypto/async_tx/async_tx.ko", "kernel/crypto/async_tx/async_memcpy.ko")
}

// push assembles an image of Debian modules for kernel dir and pushes it
// as image.
func (e *env) push(t *testing.T, image, dir string) string {
	t.Helper()
	img, err := assemble.Assemble(context.Background(), assemble.Input{KernelVersion: dir, Modules: e.modules(t)})
	require.NoError(t, err)
	digest, err := e.Client.Push(context.Background(), registry.Request{Image: image, TLS: v1beta1.TLSOptions{Insecure: true}}, img)
	require.NoError(t, err)
	return digest
}

// module is a valid Module whose one mapping (a regexp for Debian's 6.1
// kernels) maps to image, with build and sign when given.
func module(image string, build *v1beta1.Build, sign *v1beta1.Sign) preflight.Module {
	spec := v1beta1.ModuleSpec{
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:    v1beta1.ModprobeSpec{ModuleName: "async_memcpy", DirName: "/opt"},
			RegistryTLS: v1beta1.TLSOptions{Insecure: true},
			Build:       build, Sign: sign,
			KernelMappings: []v1beta1.KernelMapping{
				{Literal: "5.10.0-30-amd64", ContainerImage: image},
				{Regexp: `^6\.1\.0-[0-9]+-amd64$`, ContainerImage: image},
			},
		}},
		Selector: map[string]string{"kubernetes.io/os": "linux"},
	}
	return preflight.Module{Namespace: ns, Name: "nic", Spec: spec}
}

func checker(t *testing.T, e *env, client kubernetes.Interface, opts ...preflight.Option) *preflight.Checker {
	t.Helper()
	c, err := preflight.New(client, e.Client, opts...)
	require.NoError(t, err)
	return c
}

func objects(objs ...runtime.Object) kubernetes.Interface { return k8sfake.NewClientset(objs...) }

func configMap(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{"dockerfile": "FROM scratch\n"}}
}

func secret(name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

func TestNoMappingForTheTargetKernel(t *testing.T) {
	e := newEnv(t)
	res := checker(t, e, objects()).Check(context.Background(), module(e.repo+":${KERNEL_FULL_VERSION}", nil, nil), "6.5.0-1-amd64")
	assert.Equal(t, preflight.Fails, res.Verdict)
	assert.Equal(t, reason.NoMapping, res.Reason)
	assert.Equal(t, `no kernel mapping of Module drivers/nic matches kernel 6.5.0-1-amd64 (it has kernelMappings[0] (literal "5.10.0-30-amd64"), kernelMappings[1] (regexp "^6\\.1\\.0-[0-9]+-amd64$")): nodes that boot it get no module; add a mapping or widen a regexp`, res.Message)
	assert.Nil(t, res.Mapping)
}

func TestImagePresent(t *testing.T) {
	e := newEnv(t)
	image := e.repo + ":" + e.Kernel
	digest := e.push(t, image, e.Kernel)
	res := checker(t, e, objects(), preflight.WithLint(lint.WithKernelTree(e.Root))).
		Check(context.Background(), module(e.repo+":${KERNEL_FULL_VERSION}", nil, nil), e.Kernel)
	assert.Equal(t, preflight.Works, res.Verdict, res.Message)
	assert.Equal(t, reason.ImageReady, res.Reason)
	assert.Equal(t, digest, res.Digest)
	assert.Equal(t, image, res.Image)
	assert.Equal(t, &preflight.Mapping{Index: 1, Regexp: `^6\.1\.0-[0-9]+-amd64$`}, res.Mapping)
	require.NotNil(t, res.Lint)
	assert.Empty(t, res.Lint.Findings)
	assert.Contains(t, res.Message, "image "+image+" exists ("+digest+"), for "+e.Kernel+" by kernelMappings[1]")

	// The image exists, but holds the modules of another kernel.
	const next = "6.1.0-99-amd64"
	e.push(t, e.repo+":"+next, next)
	res = checker(t, e, objects()).Check(context.Background(), module(e.repo+":${KERNEL_FULL_VERSION}", nil, nil), next)
	assert.Equal(t, preflight.Fails, res.Verdict)
	assert.Equal(t, reason.ImageLintFailed, res.Reason)
	assert.Contains(t, res.Message, "but would not load on "+next+": 2 finding(s) for "+next)
	assert.Contains(t, res.Message, "vermagic-release: built for kernel "+e.Kernel)
}

func TestImageMissingWithoutBuild(t *testing.T) {
	e := newEnv(t)
	res := checker(t, e, objects()).Check(context.Background(), module(e.repo+":${KERNEL_FULL_VERSION}", nil, nil), e.Kernel)
	assert.Equal(t, preflight.Fails, res.Verdict)
	assert.Equal(t, reason.ImageNotFound, res.Reason)
	assert.Contains(t, res.Message, "image "+e.repo+":"+e.Kernel+" does not exist (")
	assert.Contains(t, res.Message, `and kernelMappings[1] (regexp "^6\\.1\\.0-[0-9]+-amd64$") defines no build or sign for kernel `+e.Kernel)
}

func TestImageMissingWithABuild(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	build := &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-dockerfile"},
		Secrets: []corev1.LocalObjectReference{{Name: "source-token"}}}
	m := module(e.repo+":${KERNEL_FULL_VERSION}", build, nil)

	res := checker(t, e, objects(secret("source-token", nil))).Check(ctx, m, e.Kernel)
	assert.Equal(t, preflight.Fails, res.Verdict)
	assert.Equal(t, reason.InvalidRequest, res.Reason)
	assert.Equal(t, "image "+e.repo+":"+e.Kernel+" does not exist and cannot be built for "+e.Kernel+": build.dockerfileConfigMap drivers/nic-dockerfile does not exist", res.Message)

	res = checker(t, e, objects(configMap("nic-dockerfile"))).Check(ctx, m, e.Kernel)
	assert.Equal(t, preflight.Fails, res.Verdict)
	assert.Equal(t, reason.MissingSecret, res.Reason)
	assert.Contains(t, res.Message, `build secret drivers/source-token: secrets "source-token" not found`)

	res = checker(t, e, objects(configMap("nic-dockerfile"), secret("source-token", nil))).Check(ctx, m, e.Kernel)
	assert.Equal(t, preflight.Works, res.Verdict, res.Message)
	assert.Equal(t, reason.ImageBuildable, res.Reason)
	assert.Equal(t, "image "+e.repo+":"+e.Kernel+" does not exist yet; its build is ready (Dockerfile ConfigMap drivers/nic-dockerfile, secret drivers/source-token): the Reconciler makes it when a node runs "+e.Kernel+" (kmm preflight --build makes it now)", res.Message)
	assert.True(t, res.Build)
	assert.False(t, res.Built)
}

// signing returns the sign section and its two secrets.
func signing(t *testing.T) (*v1beta1.Sign, *corev1.Secret, *corev1.Secret) {
	t.Helper()
	key, cert := kmodtest.SigningKey(t, 0xc0ffee, "acme drivers")
	s := &v1beta1.Sign{KeySecret: &corev1.LocalObjectReference{Name: "signing-key"}, CertSecret: &corev1.LocalObjectReference{Name: "signing-cert"},
		FilesToSign: []string{"/opt/lib/modules/${KERNEL_FULL_VERSION}/kernel/crypto/async_tx/*.ko"}}
	return s, secret("signing-key", map[string][]byte{"key": key}), secret("signing-cert", map[string][]byte{"cert": cert})
}

func TestSigningInputs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, key, cert := signing(t)
	build := &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-dockerfile"}}
	m := module(e.repo+":${KERNEL_FULL_VERSION}", build, s)

	res := checker(t, e, objects(configMap("nic-dockerfile"), key)).Check(ctx, m, e.Kernel)
	assert.Equal(t, reason.MissingSecret, res.Reason)
	assert.Contains(t, res.Message, `cannot be signed for `+e.Kernel+`: sign.certSecret drivers/signing-cert: secrets "signing-cert" not found`)

	_, _, other := signing(t)
	other.Name = "signing-cert"
	res = checker(t, e, objects(configMap("nic-dockerfile"), key, other)).Check(ctx, m, e.Kernel)
	assert.Equal(t, reason.SignFailed, res.Reason)
	assert.Contains(t, res.Message, "sign.keySecret drivers/signing-key and sign.certSecret drivers/signing-cert: the certificate does not match the private key")

	res = checker(t, e, objects(configMap("nic-dockerfile"), key, cert)).Check(ctx, m, e.Kernel)
	assert.Equal(t, reason.ImageBuildable, res.Reason, res.Message)
	assert.Contains(t, res.Message, "and its signing is ready (key drivers/signing-key, certificate drivers/signing-cert)")

	// Sign only: the unsigned image must exist.
	s.UnsignedImage, s.UnsignedImageRegistryTLS = e.repo+":unsigned-${KERNEL_FULL_VERSION}", v1beta1.TLSOptions{Insecure: true}
	m = module(e.repo+":${KERNEL_FULL_VERSION}", nil, s)
	res = checker(t, e, objects(key, cert)).Check(ctx, m, e.Kernel)
	assert.Equal(t, reason.ImageNotFound, res.Reason)
	assert.Contains(t, res.Message, "the image to sign, sign.unsignedImage "+e.repo+":unsigned-"+e.Kernel+", does not exist either")
}

// TestBuildNow builds the missing image with the assembler on the real
// registry, as kmm preflight --build does, then signs it.
func TestBuildNow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	for _, f := range e.modules(t) {
		p := filepath.Join(dir, e.Kernel, f.Path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, signfile.Unsigned(f.Data), 0o644))
	}
	// The assembler needs no Dockerfile: the ConfigMap may be absent.
	build := &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-dockerfile"}}
	m := module(e.repo+":${KERNEL_FULL_VERSION}", build, nil)
	b, err := assemble.New(e.Client, assemble.DirSource(dir))
	require.NoError(t, err)
	c := checker(t, e, objects(), preflight.WithBuilder(b), preflight.WithLint(lint.WithKernelTree(e.Root)))
	res := c.Check(ctx, m, e.Kernel)
	require.Equal(t, preflight.Works, res.Verdict, res.Message)
	assert.Equal(t, reason.ImageReady, res.Reason)
	assert.True(t, res.Built)
	assert.Contains(t, res.Message, "was built and pushed")
	found, err := e.Client.Verify(ctx, registry.Request{Image: e.repo + ":" + e.Kernel, TLS: v1beta1.TLSOptions{Insecure: true}})
	require.NoError(t, err)
	assert.True(t, found.Exists)
	assert.Equal(t, found.Digest, res.Digest)
	// Again: the image is there, nothing is built.
	again := c.Check(ctx, m, e.Kernel)
	assert.Equal(t, reason.ImageReady, again.Reason)
	assert.False(t, again.Built)

	// Build and sign: the build goes to the intermediate tag, the signed
	// image to the final one, and the linter finds every module signed
	// by the Module's key.
	s, key, cert := signing(t)
	m = module(e.repo+"-signed:${KERNEL_FULL_VERSION}", build, s)
	c = checker(t, e, objects(key, cert), preflight.WithBuilder(b))
	res = c.Check(ctx, m, e.Kernel)
	require.Equal(t, preflight.Works, res.Verdict, res.Message)
	assert.True(t, res.Built)
	assert.Contains(t, res.Message, "was signed and pushed")
	require.NotNil(t, res.Lint)
	require.Len(t, res.Lint.Modules, 2)
	for _, mod := range res.Lint.Modules {
		require.NotNil(t, mod.Signature, mod.Path)
		assert.Equal(t, "C0:FF:EE", mod.Signature.KeyID)
	}
	unsigned, err := e.Client.Verify(ctx, registry.Request{Image: e.repo + "-signed:" + e.Kernel + "-kmmkit-unsigned", TLS: v1beta1.TLSOptions{Insecure: true}})
	require.NoError(t, err)
	assert.True(t, unsigned.Exists, "the unsigned build is at the intermediate tag")

	// Sign only: the unsigned image is signed into the final one.
	unsignedImg, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: e.Kernel, Modules: e.modules(t)})
	require.NoError(t, err)
	_, err = e.Client.Push(ctx, registry.Request{Image: e.repo + "-plain:" + e.Kernel, TLS: v1beta1.TLSOptions{Insecure: true}}, unsignedImg)
	require.NoError(t, err)
	s.UnsignedImage, s.UnsignedImageRegistryTLS = e.repo+"-plain:${KERNEL_FULL_VERSION}", v1beta1.TLSOptions{Insecure: true}
	m = module(e.repo+"-signonly:${KERNEL_FULL_VERSION}", nil, s)
	res = checker(t, e, objects(key, cert), preflight.WithBuilder(b)).Check(ctx, m, e.Kernel)
	require.Equal(t, preflight.Works, res.Verdict, res.Message)
	assert.True(t, res.Built)
	for _, mod := range res.Lint.Modules {
		require.NotNil(t, mod.Signature, mod.Path)
		assert.Equal(t, "C0:FF:EE", mod.Signature.KeyID)
	}

	// A build that fails says why.
	bad := module(e.repo+":6.1.0-98-amd64", build, nil)
	res = checker(t, e, objects(), preflight.WithBuilder(b)).Check(ctx, bad, "6.1.0-98-amd64")
	assert.Equal(t, preflight.Fails, res.Verdict)
	assert.Equal(t, reason.BuildFailed, res.Reason)
	assert.Contains(t, res.Message, "no prebuilt modules for kernel 6.1.0-98-amd64")
}

func TestUnreachableAndUnauthorized(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	res := checker(t, e, objects()).Check(ctx, module("127.0.0.1:1/acme/nic:${KERNEL_FULL_VERSION}", nil, nil), e.Kernel)
	assert.Equal(t, preflight.Unknown, res.Verdict)
	assert.Equal(t, reason.RegistryUnavailable, res.Reason)

	m := module(e.repo+":${KERNEL_FULL_VERSION}", nil, nil)
	m.Spec.ImageRepoSecret = &corev1.LocalObjectReference{Name: "pull"}
	res = checker(t, e, objects()).Check(ctx, m, e.Kernel)
	assert.Equal(t, preflight.Fails, res.Verdict)
	assert.Equal(t, reason.Unauthorized, res.Reason)
	assert.Contains(t, res.Message, "pull secret drivers/pull")

	invalid := module("", nil, nil)
	res = checker(t, e, objects()).Check(ctx, invalid, e.Kernel)
	assert.Equal(t, reason.InvalidSpec, res.Reason)
	assert.Contains(t, res.Message, "spec.moduleLoader.container.kernelMappings[0].containerImage")
}

// TestAgainstTheAPIServer reads the Dockerfile ConfigMap from a real
// kube-apiserver: absent, then present.
func TestAgainstTheAPIServer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(testenv.RESTConfig(t))
	require.NoError(t, err)
	space := "preflight-" + time.Now().Format("150405")
	testenv.Namespace(t, cs, space)
	build := &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-dockerfile"}}
	m := module(e.repo+":${KERNEL_FULL_VERSION}", build, nil)
	m.Namespace = space
	c := checker(t, e, cs)
	res := c.Check(ctx, m, e.Kernel)
	assert.Equal(t, reason.InvalidRequest, res.Reason)
	assert.Contains(t, res.Message, "build.dockerfileConfigMap "+space+"/nic-dockerfile does not exist")

	cm := configMap("nic-dockerfile")
	cm.Namespace = space
	_, err = cs.CoreV1().ConfigMaps(space).Create(ctx, cm, metav1.CreateOptions{})
	require.NoError(t, err)
	res = c.Check(ctx, m, e.Kernel)
	assert.Equal(t, reason.ImageBuildable, res.Reason, res.Message)
}

func TestReportCondition(t *testing.T) {
	ok := preflight.Result{Namespace: ns, Name: "nic", Kernel: "6.1.0-58-amd64", Verdict: preflight.Works, Reason: reason.ImageReady}
	buildable := preflight.Result{Namespace: ns, Name: "gpu", Kernel: "6.1.0-58-amd64", Verdict: preflight.Works, Reason: reason.ImageBuildable}
	rep := &preflight.Report{Kernels: []string{"6.1.0-58-amd64"}, Results: []preflight.Result{ok, buildable}}
	c := rep.Condition("KernelUpgradeReady")
	assert.Equal(t, metav1.ConditionTrue, c.Status)
	assert.Equal(t, "PreflightPassed", c.Reason)
	assert.Equal(t, "2 Module(s) checked work on kernel(s) 6.1.0-58-amd64; images to be built: drivers/gpu on 6.1.0-58-amd64", c.Message)
	assert.True(t, rep.Works())

	unknown := preflight.Result{Namespace: ns, Name: "fs", Kernel: "6.1.0-58-amd64", Verdict: preflight.Unknown, Reason: reason.RegistryUnavailable, Message: "down"}
	rep.Results = append(rep.Results, unknown)
	c = rep.Condition("KernelUpgradeReady")
	assert.Equal(t, metav1.ConditionUnknown, c.Status)
	assert.Equal(t, "RegistryUnavailable", c.Reason)

	fail := preflight.Result{Namespace: ns, Name: "nic", Kernel: "6.1.0-59-amd64", Verdict: preflight.Fails, Reason: reason.NoMapping, Message: "no mapping"}
	rep.Results = append(rep.Results, fail)
	c = rep.Condition("KernelUpgradeReady")
	assert.Equal(t, metav1.ConditionFalse, c.Status)
	assert.Equal(t, "NoMapping", c.Reason)
	assert.Equal(t, "1 of 4 Module/kernel pair(s) fail on kernel(s) 6.1.0-58-amd64: drivers/nic on 6.1.0-59-amd64: NoMapping: no mapping", c.Message)
	rep.Results = append(rep.Results, preflight.Result{Namespace: ns, Name: "gpu", Kernel: "6.1.0-59-amd64", Verdict: preflight.Fails, Reason: reason.ImageNotFound, Message: "gone"})
	assert.Equal(t, "PreflightFailed", rep.Condition("KernelUpgradeReady").Reason)
	assert.False(t, rep.Works())
}
