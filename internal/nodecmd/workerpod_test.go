package nodecmd

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/imagetest"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/loader/node/fake"
)

// moduleImage pushes a FROM-scratch kmod image holding test, b and c
// under /opt/lib/modules/<kernel>, and firmware under /firmware.
func moduleImage(t *testing.T, reg *imagetest.Registry) string {
	t.Helper()
	tree := t.TempDir()
	dir := filepath.Join(tree, "lib", "modules", kmmKernel, "extra")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	var entries []imagetest.Entry
	for _, name := range []string{"test", "b", "c"} {
		mod := elftest.Module{Modinfo: []string{"name=" + name, "vermagic=" + kmmKernel + " " + fake.DefaultFlags}}.Bytes()
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".ko"), mod, 0o644))
	}
	_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: tree, KernelVersion: kmmKernel, ConfigPaths: []string{}})
	require.NoError(t, err)
	require.NoError(t, filepath.Walk(tree, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(tree, p)
		entries = append(entries, imagetest.File("opt/"+rel, string(data)))
		return err
	}))
	entries = append(entries, imagetest.File("firmware/acme/nic.bin", "FW"))
	tag, _ := reg.Push(t, "acme/nic:"+kmmKernel, imagetest.Image(t, imagetest.Layer(t, entries...)))
	return tag
}

// TestWorkerPodCommandLine runs the worker with the exact command line
// loader.WorkerPod gives kmmkit's worker container (its Args after the
// binary, mounts and pull secret as the Pod has them, beneath a temporary
// root): the worker pulls the image, loads in modulesLoadingOrder, copies
// the firmware and points the kernel at it; the unload Pod's command line
// unloads and removes the firmware.
func TestWorkerPodCommandLine(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	image := moduleImage(t, reg)
	cfg := v1beta1.ModuleConfig{
		KernelVersion: kmmKernel, ContainerImage: image, InsecurePull: true,
		Modprobe: v1beta1.ModprobeSpec{ModuleName: "test", DirName: "/opt", FirmwarePath: "/firmware",
			Parameters: []string{"a=1"}, ModulesLoadingOrder: []string{"test", "b", "c"}},
	}
	root := t.TempDir()
	k := fake.NewKernel(kmmKernel)
	env := Env{Kernel: k, Root: root}
	for _, action := range []loader.Action{loader.ActionLoad, loader.ActionUnload} {
		pod, err := loader.WorkerPod(loader.PodRequest{Node: "n1", Module: "nic", Namespace: "drivers", Action: action, Config: cfg,
			ImageRepoSecret: &corev1.LocalObjectReference{Name: "pull"}}, "quay.io/acme/kmm-worker:v1", loader.WithFirmwareHostPath("/var/lib/firmware"))
		require.NoError(t, err)
		c := pod.Spec.Containers[0]
		require.Equal(t, []string{"/kmm"}, c.Command)
		require.Equal(t, "worker", c.Args[0])
		// What the Pod mounts: the config (downward API), the pull secret,
		// the host's firmware directory and sysfs' firmware_class path.
		for _, m := range c.VolumeMounts {
			require.NoError(t, os.MkdirAll(filepath.Join(root, m.MountPath), 0o755))
		}
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/kmm-worker/config.yaml"), []byte(pod.Annotations[loader.AnnotationWorkerConfig]), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(root, "var/run/kmmkit/pull-secret/.dockerconfigjson"), []byte(`{"auths":{}}`), 0o600))
		sys := filepath.Join(root, "sys/module/firmware_class/parameters/path")
		require.NoError(t, os.MkdirAll(filepath.Dir(sys), 0o755))
		if action == loader.ActionLoad {
			require.NoError(t, os.WriteFile(sys, []byte("\n"), 0o644))
		}

		code, stdout, stderr := runWorker(t, env, c.Args[1:]...)
		require.Equal(t, cli.ExitOK, code, "%s %s", strings.Join(c.Args, " "), stderr)
		if action == loader.ActionLoad {
			assert.Equal(t, "loaded: c,b,test; unchanged: \n", stdout)
			assert.Equal(t, []string{"load c", "load b", "load test a=1"}, k.Events())
			assert.Equal(t, "FW", readFile(t, filepath.Join(root, "var/lib/firmware/acme/nic.bin")))
			assert.Equal(t, filepath.Join(root, "var/lib/firmware"), readFile(t, sys))
		} else {
			assert.Equal(t, "unloaded: test,b,c; unchanged: \n", stdout)
			assert.Equal(t, "<absent>", readFile(t, filepath.Join(root, "var/lib/firmware/acme/nic.bin")))
		}
	}
}

// TestWorkerPodTrustsTheCABundleItMounts runs the worker with the command
// line of a worker Pod made with loader.WithCABundleConfigMap, the
// ConfigMap's key laid where the Pod mounts it, against the TLS registry
// with htpasswd: the worker trusts that CA and pulls, and loads on a fake
// kernel; without the mount the same pull fails on TLS, and the mounted
// CA wins over a wrong one built into the image.
func TestWorkerPodTrustsTheCABundleItMounts(t *testing.T) {
	const kver = "6.1.0-57-amd64"
	regs, ref, auth, ca := tlsModuleImage(t, kver)
	// A CA that did not sign the registry's certificate: httptest's.
	srv := httptest.NewTLSServer(nil)
	srv.Close()
	other := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg := v1beta1.ModuleConfig{KernelVersion: kver, ContainerImage: ref, Modprobe: v1beta1.ModprobeSpec{ModuleName: "kmmkit_pull", DirName: "/opt"}}
	for _, c := range []struct {
		name              string
		mounted, inImage  []byte
		withOption, works bool
	}{
		{name: "mounted CA", mounted: ca, withOption: true, works: true},
		{name: "mounted CA over a wrong one in the image", mounted: ca, inImage: other, withOption: true, works: true},
		{name: "no CA", works: false},
		{name: "a wrong mounted CA", mounted: other, withOption: true, works: false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts []loader.Option
			if c.withOption {
				opts = append(opts, loader.WithCABundleConfigMap("registry-ca", ""))
			}
			pod, err := loader.WorkerPod(loader.PodRequest{Node: "n1", Module: "nic", Namespace: "drivers", Action: loader.ActionLoad, Config: cfg,
				ImageRepoSecret: &corev1.LocalObjectReference{Name: "pull"}}, "quay.io/acme/kmm-worker:v1", opts...)
			require.NoError(t, err)
			root := t.TempDir()
			write := func(p string, data []byte) {
				require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(root, p), data, 0o644))
			}
			// What the kubelet lays out for the Pod.
			for _, m := range pod.Spec.Containers[0].VolumeMounts {
				require.NoError(t, os.MkdirAll(filepath.Join(root, m.MountPath), 0o755))
			}
			write("etc/kmm-worker/config.yaml", []byte(pod.Annotations[loader.AnnotationWorkerConfig]))
			write("var/run/kmmkit/pull-secret/.dockerconfigjson", fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, regs.TLS, auth))
			if c.withOption {
				write(loader.WorkerCADir+"/ca-bundle.crt", c.mounted) // the ConfigMap's key, as the volume's item maps it
			}
			if c.inImage != nil {
				write(ImageCABundle, c.inImage)
			}
			k := fake.NewKernel(kver)
			code, stdout, stderr := runWorker(t, Env{Kernel: k, Root: root}, pod.Spec.Containers[0].Args[1:]...)
			if c.works {
				require.Equal(t, cli.ExitOK, code, stderr)
				assert.Equal(t, "loaded: kmmkit_pull; unchanged: \n", stdout)
				assert.Equal(t, []string{"load kmmkit_pull"}, k.Events())
				return
			}
			assert.Equal(t, cli.ExitError, code)
			assert.Contains(t, stderr, "TLSError", stderr)
			assert.Contains(t, stderr, "certificate signed by unknown authority")
			assert.Empty(t, k.Events())
		})
	}
}
