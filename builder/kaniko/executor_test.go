package kaniko_test

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
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/builder/kaniko"
	"github.com/kmmkit/kmmkit/builder/publish"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

// KanikoExecutorEnv names the Kaniko executor binary that
// hack/lib/kaniko.sh builds.
const KanikoExecutorEnv = "KMMKIT_KANIKO_EXECUTOR"

// TestKanikoExecutorInRunc proves the arguments of the build Pod with the
// real Kaniko executor: it runs the Pod's container command, unchanged,
// inside a runc container whose root filesystem is a scratch directory
// (never on the host: the executor replaces the root filesystem it runs
// on), with the Dockerfile where the Pod mounts it and the termination log
// bound to a file. The pushed image must carry the injected build args,
// and the termination log its digest.
func TestKanikoExecutorInRunc(t *testing.T) {
	runc := testenv.LookPath(t, "runc", "apt-get install runc")
	executor := os.Getenv(KanikoExecutorEnv)
	testenv.Need(t, "the Kaniko executor", executor != "", KanikoExecutorEnv+" is not set; hack/lib/kaniko.sh builds it")
	regs := testenv.Registry(t)
	ctx := context.Background()
	run := fmt.Sprintf("kaniko%d", rand.Uint32()%100000)
	tls := v1beta1.TLSOptions{Insecure: true}

	// The base image: a kmod layout, FROM scratch.
	const kver = "6.1.0-56-amd64"
	base, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kver, Modules: []assemble.File{{Path: "extra/nic.ko",
		Data: elftest.Module{Modinfo: []string{"name=nic", "vermagic=" + kver + " SMP preempt mod_unload modversions "}}.Bytes()}}})
	require.NoError(t, err)
	rc, err := registry.NewClient()
	require.NoError(t, err)
	baseRef := regs.Plain + "/" + run + "/base:1"
	_, err = rc.Push(ctx, registry.Request{Image: baseRef, TLS: tls}, base)
	require.NoError(t, err)

	k, err := kernelmap.ParseKernel(kver)
	require.NoError(t, err)
	req := builder.Request{Namespace: "drivers", Module: "nic", Kernel: k, Image: regs.Plain + "/" + run + "/nic:" + kver,
		Dockerfile: "ARG BASE\nFROM ${BASE}\nARG KERNEL_FULL_VERSION\nARG MOD_NAME\nARG KERNEL_XYZ\n" +
			"LABEL kernel=${KERNEL_FULL_VERSION} module=${MOD_NAME} xyz=${KERNEL_XYZ}\n",
		BuildArgs:   []v1beta1.BuildArg{{Name: "BASE", Value: baseRef}},
		RegistryTLS: tls, BaseImageRegistryTLS: tls, Modules: []string{"nic"}}
	b, err := kaniko.New(k8sfake.NewClientset())
	require.NoError(t, err)
	pod, err := b.Pod(req, 1)
	require.NoError(t, err)
	c := pod.Spec.Containers[0]

	// The container: the executor, the Dockerfile at /workspace as the
	// Pod's downward-API volume puts it, Docker's marker file.
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"kaniko/.docker", "workspace", "tmp"} {
		require.NoError(t, os.MkdirAll(filepath.Join(rootfs, d), 0o755))
	}
	data, err := os.ReadFile(executor)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(rootfs, "kaniko", "executor"), data, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(rootfs, "workspace", "Dockerfile"), []byte(pod.Annotations[kaniko.AnnotationDockerfile]), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(rootfs, ".dockerenv"), nil, 0o644))
	termination := filepath.Join(bundle, "termination-log")
	require.NoError(t, os.WriteFile(termination, nil, 0o644))
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
		"CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"terminal": false, "user": map[string]any{"uid": 0, "gid": 0}, "cwd": "/",
			"args":         append([]string{"/kaniko/executor"}, c.Args...),
			"env":          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "DOCKER_CONFIG=/kaniko/.docker/"},
			"capabilities": map[string]any{"bounding": caps, "effective": caps, "permitted": caps},
		},
		"root":     map[string]any{"path": "rootfs", "readonly": false},
		"hostname": "kaniko",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": []string{"nosuid", "noexec", "nodev", "ro"}},
			{"destination": "/dev/termination-log", "type": "bind", "source": termination, "options": []string{"bind", "rw"}},
		},
		// No network namespace: the registry listens on the host's loopback.
		"linux": map[string]any{"namespaces": []map[string]string{{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}}},
	}
	raw, err := json.Marshal(spec)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(bundle, "config.json"), raw, 0o644))

	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	id := "kmmkit-" + run
	t.Cleanup(func() { _ = exec.Command(runc, "delete", "--force", id).Run() })
	out, err := exec.CommandContext(rctx, runc, "run", "--bundle", bundle, id).CombinedOutput()
	require.NoError(t, err, "kaniko in runc:\n%s", out)
	t.Logf("kaniko in runc:\n%s", builder.LogTail(string(out), 8))

	digest := strings.TrimSpace(readFile(t, termination))
	assert.True(t, strings.HasPrefix(digest, "sha256:"), "the termination log holds the digest: %q", digest)
	staging, err := publish.StagingTag(req.Image)
	require.NoError(t, err)
	_, got, err := rc.Pull(ctx, registry.Request{Image: staging, TLS: tls})
	require.NoError(t, err)
	assert.Equal(t, digest, got, "the digest the build Pod reports is the one pushed to the staging tag")
	res, err := rc.Verify(ctx, registry.Request{Image: req.Image, TLS: tls})
	require.NoError(t, err)
	assert.False(t, res.Exists, "not published before it is linted")

	// What the Builder does once the Pod succeeded: lint it, and publish.
	pub, err := publish.New(rc)
	require.NoError(t, err)
	published, err := pub.Publish(ctx, req, registry.AuthInfo{}, "")
	require.NoError(t, err)
	assert.Equal(t, digest, published, "the manifest Kaniko pushed, at the request's image")
	img, got, err := rc.Pull(ctx, registry.Request{Image: req.Image, TLS: tls})
	require.NoError(t, err)
	assert.Equal(t, digest, got)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"kernel": kver, "module": "nic", "xyz": "6.1.0"}, withoutKMMKit(cfg.Config.Labels))
}

func readFile(t *testing.T, p string) string {
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(data)
}

// withoutKMMKit drops the labels the base image brought.
func withoutKMMKit(l map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		if !strings.HasPrefix(k, "io.kmmkit.") {
			out[k] = v
		}
	}
	return out
}
