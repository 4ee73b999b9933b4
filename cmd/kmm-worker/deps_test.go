package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

// clusterTrees are the module trees the node side must not link: every
// Kubernetes and OpenShift client (typed clientsets, informers, listers,
// event recorders, REST clients), controller-runtime and kmmkit's
// builders.
var clusterTrees = []string{
	"k8s.io/client-go",
	"github.com/openshift/client-go",
	"sigs.k8s.io/controller-runtime",
	"github.com/kmmkit/kmmkit/builder",
}

// clusterPackages are kmmkit's cluster-side packages, which import
// client-go (their subpackages, such as kmm/v1beta1 and loader/node, are
// not).
var clusterPackages = map[string]bool{
	"github.com/kmmkit/kmmkit/kmm":                 true,
	"github.com/kmmkit/kmmkit/kmm/kmmtest":         true,
	"github.com/kmmkit/kmmkit/loader":              true,
	"github.com/kmmkit/kmmkit/loader/fake":         true,
	"github.com/kmmkit/kmmkit/registry/pullsecret": true,
}

// forbidden returns the dependencies of pkg on the cluster side.
func forbidden(t *testing.T, goTool, pkg string) []string {
	t.Helper()
	out, err := exec.Command(goTool, "list", "-deps", pkg).Output()
	require.NoError(t, err, "go list -deps %s", pkg)
	var bad []string
	for _, dep := range strings.Fields(string(out)) {
		if clusterPackages[dep] {
			bad = append(bad, dep)
			continue
		}
		for _, p := range clusterTrees {
			if dep == p || strings.HasPrefix(dep, p+"/") {
				bad = append(bad, dep)
				break
			}
		}
	}
	return bad
}

// TestNodeSideLinksNoKubernetesClient holds the dependency rule of the
// node side: the worker binary, its commands, the native loader and the
// registry client it pulls with link no Kubernetes client. The cluster
// side's loader is the counter-check: it does link client-go, so the
// check can fail.
func TestNodeSideLinksNoKubernetesClient(t *testing.T) {
	goTool := testenv.LookPath(t, "go", "a Go toolchain on PATH")
	for _, pkg := range []string{
		"github.com/kmmkit/kmmkit/cmd/kmm-worker",
		"github.com/kmmkit/kmmkit/internal/nodecmd",
		"github.com/kmmkit/kmmkit/internal/cli",
		"github.com/kmmkit/kmmkit/loader/node",
		"github.com/kmmkit/kmmkit/registry",
	} {
		assert.Empty(t, forbidden(t, goTool, pkg), "%s links the cluster side", pkg)
	}
	assert.Contains(t, forbidden(t, goTool, "github.com/kmmkit/kmmkit/loader"), "k8s.io/client-go/kubernetes",
		"the cluster-side loader links client-go's clientset: the check sees it")
}
