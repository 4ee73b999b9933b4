package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

// preflightModule is a Module manifest whose one regexp maps Debian's
// 6.1 kernels to image; build, when set, is the mapping's build section
// (YAML, indented for it).
func preflightModule(name, image, build string) string {
	m := fmt.Sprintf(`apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: %s, namespace: drivers}
spec:
  selector: {kubernetes.io/os: linux}
  moduleLoader:
    container:
      modprobe: {moduleName: async_memcpy}
      registryTLS: {insecure: true}
      kernelMappings:
        - regexp: '^6\.1\.0-[0-9]+-amd64$'
          containerImage: %s
`, name, image)
	if build != "" {
		m += "          build:\n" + build
	}
	return m
}

// writeManifest writes the documents as one manifest and returns its path.
func writeManifest(t *testing.T, docs ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "modules.yaml")
	require.NoError(t, os.WriteFile(p, []byte(strings.Join(docs, "---\n")), 0o600))
	return p
}

// preflightRows returns the table's rows, by their first cell.
func preflightRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	lines := strings.Split(out, "\n")
	require.True(t, strings.HasPrefix(lines[0], "MODULE"), out)
	for _, l := range lines[1:] {
		if l == "" {
			break
		}
		f := strings.Fields(l)
		rows[f[0]+" "+f[1]] = f
	}
	return rows
}

const dockerfileBuild = "            dockerfileConfigMap: {name: nic-dockerfile}\n"

func TestPreflightCommand(t *testing.T) {
	e := newKmodEnv(t)
	present := e.push(t, "present", assemble.Input{Modules: e.debianModules(t)})
	manifest := writeManifest(t,
		preflightModule("present", strings.TrimSuffix(present, e.Kernel)+"${KERNEL_FULL_VERSION}", ""),
		preflightModule("missing", e.repo+"/missing:${KERNEL_FULL_VERSION}", ""),
		preflightModule("noconfigmap", e.repo+"/noconfigmap:${KERNEL_FULL_VERSION}", dockerfileBuild),
	)
	const other = "5.10.0-30-amd64"

	// Present works; missing with no build and a build with no
	// ConfigMap fail; no mapping for 5.10.
	code, out, stderr := runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel+","+other, "--kernel-tree", e.Root)
	assert.Equal(t, exitNo, code, "stdout %q, stderr %q", out, stderr)
	rows := preflightRows(t, out)
	require.Len(t, rows, 6, out)
	assert.Equal(t, []string{"drivers/present", e.Kernel, "Works", "ImageReady", "image", present, "exists"}, rows["drivers/present "+e.Kernel][:7])
	assert.Equal(t, []string{"Fails", "NoMapping"}, rows["drivers/present "+other][2:4])
	assert.Equal(t, []string{"Fails", "ImageNotFound"}, rows["drivers/missing "+e.Kernel][2:4])
	assert.Equal(t, []string{"Fails", "InvalidRequest"}, rows["drivers/noconfigmap "+e.Kernel][2:4])
	assert.Contains(t, out, "no kernel mapping of Module drivers/present matches kernel "+other)
	assert.Contains(t, out, "image "+e.repo+"/missing:"+e.Kernel+" does not exist")
	assert.Contains(t, out, "build.dockerfileConfigMap drivers/nic-dockerfile does not exist")
	assert.Contains(t, out, "\n1 of 6 Module/kernel pair(s) work, 5 fail (kernels "+e.Kernel+", "+other+")\n")

	// The same as JSON, for scripts.
	code, out, _ = runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel, "--module", "present", "--module", "missing", "-o", "json")
	assert.Equal(t, exitNo, code)
	var rep struct {
		Kernels []string `json:"kernels"`
		Results []struct {
			Name, Kernel, Verdict, Reason, Message, Image, Digest string
			Mapping                                               *struct{ Index int }
			Lint                                                  *struct{ Findings []any }
		} `json:"results"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.Len(t, rep.Results, 2)
	assert.Equal(t, "present", rep.Results[0].Name)
	assert.Equal(t, "ImageReady", rep.Results[0].Reason)
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, rep.Results[0].Digest)
	require.NotNil(t, rep.Results[0].Lint)
	assert.Empty(t, rep.Results[0].Lint.Findings)
	assert.Equal(t, "ImageNotFound", rep.Results[1].Reason)

	// Only the image present: exit 0.
	code, out, stderr = runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel, "--module", "present")
	assert.Equal(t, exitOK, code, out+stderr)
	assert.Contains(t, out, "\n1 of 1 Module/kernel pair(s) work (kernels "+e.Kernel+")\n")

	// With the Dockerfile ConfigMap in the manifest, a build secret
	// missing; then given by stringData: the build is ready.
	withSecret := dockerfileBuild + "            secrets: [{name: source-token}]\n"
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nic-dockerfile, namespace: drivers}\ndata: {dockerfile: \"FROM scratch\\n\"}\n"
	code, out, _ = runCmd(t, "", "preflight", "-f", writeManifest(t, preflightModule("nic", e.repo+"/nic:${KERNEL_FULL_VERSION}", withSecret), cm), "--kernel", e.Kernel)
	assert.Equal(t, exitNo, code)
	assert.Equal(t, []string{"Fails", "MissingSecret"}, preflightRows(t, out)["drivers/nic "+e.Kernel][2:4])
	assert.Contains(t, out, `build secret drivers/source-token: secrets "source-token" not found`)
	secret := "apiVersion: v1\nkind: Secret\nmetadata: {name: source-token, namespace: drivers}\nstringData: {token: abc}\n"
	code, out, stderr = runCmd(t, "", "preflight", "-f", writeManifest(t, preflightModule("nic", e.repo+"/nic:${KERNEL_FULL_VERSION}", withSecret), cm, secret), "--kernel", e.Kernel)
	assert.Equal(t, exitOK, code, out+stderr)
	assert.Equal(t, []string{"Works", "ImageBuildable"}, preflightRows(t, out)["drivers/nic "+e.Kernel][2:4])
	assert.Contains(t, out, "its build is ready (Dockerfile ConfigMap drivers/nic-dockerfile, secret drivers/source-token)")
}

// TestPreflightFindings: an image that exists but would not load fails
// with ImageLintFailed, and the table lists the findings under it.
func TestPreflightFindings(t *testing.T) {
	e := newKmodEnv(t)
	ref := e.push(t, "wrongprefix", assemble.Input{DirName: "/", Modules: e.debianModules(t)})
	manifest := writeManifest(t, preflightModule("nic", strings.TrimSuffix(ref, e.Kernel)+"${KERNEL_FULL_VERSION}", ""))
	code, out, stderr := runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel)
	assert.Equal(t, exitNo, code, stderr)
	assert.Equal(t, []string{"Fails", "ImageLintFailed"}, preflightRows(t, out)["drivers/nic "+e.Kernel][2:4])
	assert.Contains(t, out, "\ndrivers/nic on "+e.Kernel+": "+ref+"@sha256:")
	assert.Contains(t, out, "\n  /opt/lib/modules/"+e.Kernel+": layout: ")

	// --no-lint only asks whether it exists.
	code, out, stderr = runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel, "--no-lint")
	assert.Equal(t, exitOK, code, out+stderr)
}

// TestPreflightBuild builds the missing image with the assembler from
// prebuilt modules and pushes it, as before an upgrade: the ConfigMap
// the Reconciler's builder would need is absent, the assembler needs
// none.
func TestPreflightBuild(t *testing.T) {
	e := newKmodEnv(t)
	dir := t.TempDir()
	for _, f := range e.debianModules(t) {
		p := filepath.Join(dir, e.Kernel, f.Path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, signfile.Unsigned(f.Data), 0o644))
	}
	image := e.repo + "/built:" + e.Kernel
	manifest := writeManifest(t, preflightModule("nic", e.repo+"/built:${KERNEL_FULL_VERSION}", dockerfileBuild))

	code, out, stderr := runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel, "--build", "--modules-dir", dir)
	require.Equal(t, exitOK, code, out+stderr)
	assert.Equal(t, []string{"Works", "ImageReady"}, preflightRows(t, out)["drivers/nic "+e.Kernel][2:4])
	assert.Contains(t, out, "image "+image+" was built and pushed (sha256:")
	found, err := e.Client.Verify(context.Background(), registry.Request{Image: image, TLS: v1beta1.TLSOptions{Insecure: true}})
	require.NoError(t, err)
	assert.True(t, found.Exists)

	// Now it exists: nothing is built.
	code, out, _ = runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "image "+image+" exists (")

	// A kernel with no prebuilt modules: the build fails, exit 1.
	const next = "6.1.0-98-amd64"
	code, out, _ = runCmd(t, "", "preflight", "-f", manifest, "--kernel", next, "--build", "--modules-dir", dir)
	assert.Equal(t, exitNo, code)
	assert.Equal(t, []string{"Fails", "BuildFailed"}, preflightRows(t, out)["drivers/nic "+next][2:4])
	assert.Contains(t, out, "no prebuilt modules for kernel "+next)

	// Prebuilt modules of another kernel under this one's directory: the
	// assembler lints what it built and refuses to push it.
	const wrong = "6.1.0-97-amd64"
	require.NoError(t, os.Rename(filepath.Join(dir, e.Kernel), filepath.Join(dir, wrong)))
	code, out, _ = runCmd(t, "", "preflight", "-f", manifest, "--kernel", wrong, "--build", "--modules-dir", dir)
	assert.Equal(t, exitNo, code)
	assert.Equal(t, []string{"Fails", "ImageLintFailed"}, preflightRows(t, out)["drivers/nic "+wrong][2:4])
	assert.Contains(t, out, "/opt/lib/modules/"+wrong+"/kernel/crypto/async_tx/async_memcpy.ko: vermagic-release: built for kernel "+e.Kernel)
	found, err = e.Client.Verify(context.Background(), registry.Request{Image: e.repo + "/built:" + wrong, TLS: v1beta1.TLSOptions{Insecure: true}})
	require.NoError(t, err)
	assert.False(t, found.Exists, "nothing was pushed")
}

// TestPreflightBadInputAndUnreachable: exit 2.
// TestPreflightBuildah: kmm preflight --build --builder buildah builds
// the Module's Dockerfile here with the real buildah, lints what it
// pushed and publishes it at the Module's image; an image that would not
// load (its modules under /lib/modules) fails with ImageLintFailed and is
// not published.
func TestPreflightBuildah(t *testing.T) {
	e := newKmodEnv(t)
	bin := testenv.LookPath(t, "buildah", "apt-get install buildah runc")
	good := e.push(t, "base-good", assemble.Input{Modules: e.debianModules(t)})
	misplaced := e.push(t, "base-misplaced", assemble.Input{DirName: "/", Modules: e.debianModules(t)})
	root := t.TempDir()
	t.Cleanup(func() {
		_ = exec.Command(bin, "--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "runroot"), "--storage-driver", "vfs", "rm", "--all").Run()
	})
	build := dockerfileBuild + "            baseImageRegistryTLS: {insecure: true}\n"
	manifest := func(image, from string) string {
		cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nic-dockerfile, namespace: drivers}\n" +
			"data: {dockerfile: \"FROM " + from + "\\nLABEL built-by=buildah\\n\"}\n"
		return writeManifest(t, preflightModule("nic", image, build), cm)
	}
	args := func(m string) []string {
		return []string{"preflight", "-f", m, "--kernel", e.Kernel, "--build", "--builder", "buildah", "--buildah-root", root, "--build-timeout", "5m"}
	}
	insecure := v1beta1.TLSOptions{Insecure: true}

	image := e.repo + "/buildah-good:" + e.Kernel
	code, out, stderr := runCmd(t, "", args(manifest(e.repo+"/buildah-good:${KERNEL_FULL_VERSION}", good))...)
	require.Equal(t, exitOK, code, out+stderr)
	assert.Equal(t, []string{"Works", "ImageReady"}, preflightRows(t, out)["drivers/nic "+e.Kernel][2:4])
	assert.Contains(t, out, "image "+image+" was built and pushed (sha256:")
	img, _, err := e.Client.Pull(context.Background(), registry.Request{Image: image, TLS: insecure})
	require.NoError(t, err)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "buildah", cfg.Config.Labels["built-by"], "the image buildah built from the Dockerfile")

	bad := e.repo + "/buildah-misplaced:" + e.Kernel
	code, out, stderr = runCmd(t, "", args(manifest(e.repo+"/buildah-misplaced:${KERNEL_FULL_VERSION}", misplaced))...)
	assert.Equal(t, exitNo, code, out+stderr)
	assert.Equal(t, []string{"Fails", "ImageLintFailed"}, preflightRows(t, out)["drivers/nic "+e.Kernel][2:4], out)
	assert.Contains(t, out, bad+"-kmmkit-unlinted would not load: 1 finding(s) for "+e.Kernel+": /opt/lib/modules/"+e.Kernel+": layout: ")
	found, err := e.Client.Verify(context.Background(), registry.Request{Image: bad, TLS: insecure})
	require.NoError(t, err)
	assert.False(t, found.Exists, "not published")
}

func TestPreflightBadInputAndUnreachable(t *testing.T) {
	e := newKmodEnv(t)
	manifest := writeManifest(t, preflightModule("nic", "127.0.0.1:1/acme/nic:${KERNEL_FULL_VERSION}", ""))
	code, out, _ := runCmd(t, "", "preflight", "-f", manifest, "--kernel", e.Kernel, "--timeout", "5s")
	assert.Equal(t, exitError, code)
	assert.Equal(t, []string{"Unknown", "RegistryUnavailable"}, preflightRows(t, out)["drivers/nic "+e.Kernel][2:4])
	assert.Contains(t, out, "1 could not be checked")

	bad := writeManifest(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: 1}\n")
	const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nic-dockerfile, namespace: drivers}\ndata: {dockerfile: \"FROM scratch\\n\"}\n"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no kernel", []string{"-f", manifest}, "no kernel: give at least one with --kernel"},
		{"short kernel", []string{"-f", manifest, "--kernel", e.Kernel + ",6.1"}, `--kernel "6.1": kernel version "6.1" has 2 component(s)`},
		{"no modules", []string{"--kernel", e.Kernel}, "no Modules: give a manifest with -f, or a cluster with --kubeconfig"},
		{"missing file", []string{"-f", "/nonexistent.yaml", "--kernel", e.Kernel}, "/nonexistent.yaml"},
		{"bad object", []string{"-f", bad, "--kernel", e.Kernel}, "ConfigMap x"},
		{"no module of that name", []string{"-f", manifest, "--kernel", e.Kernel, "--module", "gpu"}, "no Module to check"},
		{"bad output", []string{"-f", manifest, "--kernel", e.Kernel, "-o", "xml"}, `unknown output format "xml"`},
		{"modules-dir without build", []string{"-f", manifest, "--kernel", e.Kernel, "--modules-dir", "/tmp"}, "--modules-dir needs --build"},
		{"build without modules-dir", []string{"-f", manifest, "--kernel", e.Kernel, "--build"}, "--builder assemble needs --modules-dir"},
		{"kaniko without a cluster", []string{"-f", manifest, "--kernel", e.Kernel, "--build", "--builder", "kaniko"},
			"--builder kaniko runs its build Pod in a cluster: give --kubeconfig, or build here with --builder buildah (or assemble)"},
		{"unknown builder", []string{"-f", manifest, "--kernel", e.Kernel, "--build", "--builder", "docker"}, `unknown --builder "docker": use assemble, buildah or kaniko`},
		{"modules-dir with buildah", []string{"-f", manifest, "--kernel", e.Kernel, "--build", "--builder", "buildah", "--modules-dir", "/tmp"}, "--modules-dir is for --builder assemble, not buildah"},
		{"build-volume without build", []string{"-f", manifest, "--kernel", e.Kernel, "--build-volume", "/usr:/usr"}, "--buildah-root and --build-volume need --build"},
		{"two ConfigMaps of one name", []string{"-f", writeManifest(t, cm, cm), "--kernel", e.Kernel}, "metadata.name: Duplicate value: \"nic-dockerfile\""},
		{"stray argument", []string{"-f", manifest, e.Kernel}, `unexpected argument "` + e.Kernel + `"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runCmd(t, "", append([]string{"preflight"}, tc.args...)...)
			assert.Equal(t, exitError, code)
			assert.Empty(t, out)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

// TestPreflightKubeconfig reads the Modules and the ConfigMaps they name
// from a real kube-apiserver.
func TestPreflightKubeconfig(t *testing.T) {
	e := newKmodEnv(t)
	cfg := testenv.RESTConfig(t)
	kubeconfig := os.Getenv(testenv.KubeconfigEnv)
	testenv.InstallCRD(t, cfg, v1beta1.CRD())
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	space := fmt.Sprintf("preflight-cli-%d", rand.Uint32())
	testenv.Namespace(t, cs, space)
	ctx := context.Background()
	m := &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Namespace: space, Name: "nic"}, Spec: v1beta1.ModuleSpec{
		Selector: map[string]string{"kubernetes.io/os": "linux"},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:    v1beta1.ModprobeSpec{ModuleName: "async_memcpy"},
			RegistryTLS: v1beta1.TLSOptions{Insecure: true},
			KernelMappings: []v1beta1.KernelMapping{{Regexp: `^6\.1\.`, ContainerImage: e.repo + "/kube:${KERNEL_FULL_VERSION}",
				Build: &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-dockerfile"}}}},
		}},
	}}
	_, err = kmm.NewModuleClient(dyn).Create(ctx, m)
	require.NoError(t, err)

	code, out, stderr := runCmd(t, "", "preflight", "--kubeconfig", kubeconfig, "-n", space, "--kernel", e.Kernel)
	assert.Equal(t, exitNo, code, stderr)
	assert.Equal(t, []string{"Fails", "InvalidRequest"}, preflightRows(t, out)[space+"/nic "+e.Kernel][2:4])
	assert.Contains(t, out, "build.dockerfileConfigMap "+space+"/nic-dockerfile does not exist")

	_, err = cs.CoreV1().ConfigMaps(space).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: space, Name: "nic-dockerfile"},
		Data: map[string]string{"dockerfile": "FROM scratch\n"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	code, out, stderr = runCmd(t, "", "preflight", "--kubeconfig", kubeconfig, "-n", space, "--kernel", e.Kernel)
	assert.Equal(t, exitOK, code, out+stderr)
	assert.Equal(t, []string{"Works", "ImageBuildable"}, preflightRows(t, out)[space+"/nic "+e.Kernel][2:4])

	// --builder kaniko runs KMM's build Pod in the cluster, pushing to the
	// staging tag. This API server has no kubelet, so the Pod stays
	// pending and the build times out.
	code, out, stderr = runCmd(t, "", "preflight", "--kubeconfig", kubeconfig, "-n", space, "--kernel", e.Kernel,
		"--build", "--builder", "kaniko", "--build-timeout", "5s")
	assert.Equal(t, exitNo, code, out+stderr)
	assert.Equal(t, []string{"Fails", "BuildFailed"}, preflightRows(t, out)[space+"/nic "+e.Kernel][2:4])
	assert.Contains(t, out, "did not finish within 5s (it is pending)")
	pods, err := cs.CoreV1().Pods(space).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	assert.Equal(t, "nic-build-"+strings.ReplaceAll(e.Kernel, ".", "-"), pods.Items[0].Name)
	assert.Contains(t, pods.Items[0].Spec.Containers[0].Args, e.repo+"/kube:"+e.Kernel+"-kmmkit-unlinted")

	// An unreachable cluster: exit 2.
	bad := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(bad, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: x}}]
current-context: c
`), 0o600))
	code, _, stderr = runCmd(t, "", "preflight", "--kubeconfig", bad, "--kernel", e.Kernel)
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr, "listing Modules")
}
