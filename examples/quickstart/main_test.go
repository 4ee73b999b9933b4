package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

// TestQuickstart runs the README's first command in-process.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), nil, &out))
	s := out.String()
	assert.Contains(t, s, "the image for 6.1.0-57-amd64 is missing")
	assert.Regexp(t, regexp.MustCompile(`event on the Module: Normal ImageBuilt built and pushed 127\.0\.0\.1:\d+/acme/nic:6\.1\.0-57-amd64`), s)
	assert.Regexp(t, regexp.MustCompile(`6\.1\.0-57-amd64\s+127\.0\.0\.1:\d+/acme/nic:6\.1\.0-57-amd64\s+built in pass 1\s+Ready\s+1\s+sha256:`), s)
	assert.Regexp(t, regexp.MustCompile(`6\.1\.0-56-amd64\s+127\.0\.0\.1:\d+/acme/nic:6\.1\.0-56-amd64\s+published before\s+Ready\s+2`), s)
	assert.Regexp(t, regexp.MustCompile(`worker-d\s+6\.1\.0-57-amd64\s+loaded from 127\.0\.0\.1:\d+/acme/nic:6\.1\.0-57-amd64\s+true`), s)
	assert.Regexp(t, regexp.MustCompile(`gpu-less\s+6\.1\.0-56-amd64\s+not selected\s+false`), s)
	assert.Contains(t, s, "nodes: 4 match the selector, 4 desired, 4 available")
	assert.Contains(t, s, "Loaded=True (AllNodesLoaded)")
	assert.Contains(t, s, "Degraded=False")
}

// TestQuickstartKubeconfig runs the quickstart against the test
// kube-apiserver and registry with --kubeconfig, playing the kubelet.
func TestQuickstartKubeconfig(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	regs := testenv.Registry(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testenv.InstallCRD(t, cfg, v1beta1.CRD())
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	id := fmt.Sprintf("qs%d", rand.Uint32()%100000)
	ns := "kmmkit-" + id
	testenv.Namespace(t, cs, ns)
	const kver = "6.1.0-56-amd64"
	node := id + "-node"
	testenv.ReadyNode(t, cs, node, map[string]string{"quickstart": id}, kver, "boot-1")
	image := regs.Plain + "/" + id + "/nic:" + kver
	img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kver, Modules: []assemble.File{{Path: "extra/nic.ko", Data: elftest.Module{}.Bytes()}}})
	require.NoError(t, err)
	rc, err := registry.NewClient()
	require.NoError(t, err)
	_, err = rc.Push(ctx, registry.Request{Image: image, TLS: v1beta1.TLSOptions{Insecure: true}}, img)
	require.NoError(t, err)
	manifest := filepath.Join(t.TempDir(), "module.yaml")
	require.NoError(t, os.WriteFile(manifest, []byte(`apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata:
  name: nic
  namespace: `+ns+`
spec:
  selector:
    quickstart: `+id+`
  moduleLoader:
    container:
      modprobe:
        moduleName: nic
      registryTLS:
        insecure: true
      kernelMappings:
        - literal: `+kver+`
          containerImage: `+image+`
`), 0o644))

	// The kubelet: run every worker Pod of the namespace to success.
	go func() {
		for ctx.Err() == nil {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for i := range pods.Items {
					if p := &pods.Items[i]; p.Status.Phase != corev1.PodSucceeded {
						p.Status.Phase = corev1.PodSucceeded
						_, _ = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
					}
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	var out bytes.Buffer
	err = run(ctx, []string{"--kubeconfig", os.Getenv(testenv.KubeconfigEnv), "-f", manifest, "--worker-image", "quay.io/kmmkit/kmm:test", "--timeout", "2m"}, &out)
	require.NoError(t, err, "%s", out.String())
	s := out.String()
	assert.Regexp(t, regexp.MustCompile(node+`\s+`+regexp.QuoteMeta(kver)+`\s+loaded from `+regexp.QuoteMeta(image)+`\s+true`), s)
	assert.Contains(t, s, "nodes: 1 match the selector, 1 desired, 1 available")
}
