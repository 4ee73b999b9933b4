package kmm_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// TestImageLintInStatus: with WithImageLint, the Reconciler lints each
// kernel's image on the real registry and reports findings in the
// kernel's status; without it, nothing is linted.
func TestImageLintInStatus(t *testing.T) {
	regs := testenv.Registry(t)
	ctx := context.Background()
	client, err := registry.NewClient()
	require.NoError(t, err)
	// The Reconciler reaches the registry through a proxy that counts
	// blob downloads: each digest is linted once per kernel.
	var pulls atomic.Int32
	target, err := url.Parse("http://" + regs.Plain)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			pulls.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	path := fmt.Sprintf("/lint%d/nic", rand.Uint32()%100000)
	repo := strings.TrimPrefix(srv.URL, "http://") + path
	// Both images hold nic_drv built for k56; k57's lies under k57.
	drv := elftest.Module{Modinfo: []string{"vermagic=" + k56 + " SMP preempt mod_unload modversions "}}.Bytes()
	for _, k := range []string{k56, k57} {
		img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: k, Modules: []assemble.File{{Path: "extra/nic_drv.ko", Data: drv}}})
		require.NoError(t, err)
		_, err = client.Push(ctx, registry.Request{Image: repo + ":" + k, TLS: v1beta1.TLSOptions{Insecure: true}}, img)
		require.NoError(t, err)
	}
	module := nicModule()
	module.Spec.ModuleLoader.Container.RegistryTLS = v1beta1.TLSOptions{Insecure: true}
	module.Spec.ModuleLoader.Container.KernelMappings = []v1beta1.KernelMapping{{Regexp: "^.+$", ContainerImage: repo + ":${KERNEL_FULL_VERSION}"}}
	kernels := func(m *v1beta1.Module) map[string]v1beta1.KernelStatus {
		out := map[string]v1beta1.KernelStatus{}
		for _, k := range m.Status.Kernels {
			out[k.Kernel] = k
		}
		return out
	}

	h := cluster(t, kmm.WithImageChecker(client), kmm.WithImageLint(client))
	require.NoError(t, h.CreateModule(ctx, module))
	ks := kernels(settled(t, h))
	require.Len(t, ks, 2)
	assert.Equal(t, v1beta1.KernelStateReady, ks[k56].State)
	assert.Equal(t, reason.ImageReady, ks[k56].Reason)
	assert.Empty(t, ks[k56].Message)
	assert.Equal(t, v1beta1.KernelStateReady, ks[k57].State, "the worker still tries it")
	assert.Equal(t, reason.ImageLintFailed, ks[k57].Reason)
	assert.Contains(t, ks[k57].Message, "image "+repo+":"+k57+" ("+ks[k57].Digest+") would not load on "+k57+": 1 finding(s) for "+k57+": ")
	assert.Contains(t, ks[k57].Message, "/opt/lib/modules/"+k57+"/extra/nic_drv.ko: vermagic-release: built for kernel "+k56)
	linted := pulls.Load()
	assert.Positive(t, linted)
	for range 3 {
		_, err := h.Reconcile(ctx, "drivers", "nic")
		require.NoError(t, err)
	}
	assert.Equal(t, linted, pulls.Load(), "no image is pulled again")
	assert.Equal(t, reason.ImageLintFailed, kernels(settled(t, h))[k57].Reason)

	// Off by default.
	h = cluster(t, kmm.WithImageChecker(client))
	require.NoError(t, h.CreateModule(ctx, module))
	ks = kernels(settled(t, h))
	assert.Equal(t, reason.ImageReady, ks[k57].Reason)
	assert.Empty(t, ks[k57].Message)
}
