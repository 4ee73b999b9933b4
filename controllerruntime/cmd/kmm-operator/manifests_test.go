package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/controllerruntime/admission"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func read(t *testing.T, path string, into any) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("../../config", path))
	require.NoError(t, err)
	if into != nil {
		require.NoError(t, yaml.UnmarshalStrict(raw, into), path)
	}
	return raw
}

// TestRolesAreGenerated regenerates the roles from the kubebuilder:rbac
// markers with the pinned controller-gen, as hack/generate.sh does, and
// fails when the committed ones differ.
func TestRolesAreGenerated(t *testing.T) {
	goTool := testenv.LookPath(t, "go", "the Go toolchain runs controller-gen")
	root, err := filepath.Abs("../../..")
	require.NoError(t, err)
	cr := filepath.Join(root, "controllerruntime")
	for _, tc := range []struct {
		role, file string
		paths      []string
	}{
		{"kmm-operator", "rbac/role.yaml", []string{cr + "/operator/...", cr + "/cmd/kmm-operator/..."}},
		{"kmm-operator-openshift-builds", "rbac/openshift_builds_role.yaml", []string{cr + "/internal/openshiftrbac/..."}},
	} {
		out := t.TempDir()
		args := []string{"tool", "controller-gen", "rbac:roleName=" + tc.role, "output:rbac:dir=" + out}
		for _, p := range tc.paths {
			args = append(args, "paths="+p)
		}
		cmd := exec.Command(goTool, args...)
		cmd.Dir = filepath.Join(root, "hack/tools")
		msg, err := cmd.CombinedOutput()
		require.NoError(t, err, "controller-gen: %s", msg)
		want, err := os.ReadFile(filepath.Join(out, "role.yaml"))
		require.NoError(t, err)
		assert.Equal(t, string(want), string(read(t, tc.file, nil)), "config/%s is stale: run make generate", tc.file)
	}
}

// TestCRDIsKMMKits: the operator installs the CRD kmm/v1beta1 serves.
func TestCRDIsKMMKits(t *testing.T) {
	assert.True(t, bytes.Equal(v1beta1.CRD(), read(t, "crd/kmm.sigs.x-k8s.io_modules.yaml", nil)),
		"config/crd is not kmm/v1beta1's CRD: run make generate")
}

// TestManifestsAgree checks that the manifests name each other and the
// binary consistently: the Deployment's flags parse, its service account
// is the one the roles are bound to, its webhook port is the Service's
// target and the certificate Secret is cert-manager's, the webhook path
// is the one the operator serves, and the operator's namespace may run
// worker Pods.
func TestManifestsAgree(t *testing.T) {
	var dep appsv1.Deployment
	read(t, "manager/deployment.yaml", &dep)
	spec := dep.Spec.Template.Spec
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	require.NotEmpty(t, env["KMM_WORKER_IMAGE"])
	t.Setenv("KMM_WORKER_IMAGE", env["KMM_WORKER_IMAGE"])
	f, err := parse(flag.NewFlagSet("kmm-operator", flag.ContinueOnError), c.Args)
	require.NoError(t, err, "the Deployment's args")
	assert.True(t, f.leaderElect)
	assert.Equal(t, env["KMM_WORKER_IMAGE"], f.workerImage)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	assert.Equal(t, int32(f.webhookPort), ports["webhook"])
	assert.Equal(t, ":"+itoa(ports["metrics"]), f.metricsAddr)
	assert.Equal(t, ":"+itoa(ports["probes"]), f.probeAddr)
	assert.True(t, *spec.SecurityContext.RunAsNonRoot)
	assert.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)

	var sa corev1.ServiceAccount
	read(t, "rbac/service_account.yaml", &sa)
	assert.Equal(t, sa.Name, spec.ServiceAccountName)
	for _, file := range []string{"rbac/role_binding.yaml", "rbac/leader_election_role_binding.yaml", "rbac/openshift_builds_role_binding.yaml"} {
		var b rbacv1.ClusterRoleBinding // a RoleBinding reads the same
		read(t, file, &b)
		assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}}, b.Subjects, file)
	}

	var svc corev1.Service
	read(t, "webhook/service.yaml", &svc)
	assert.Equal(t, dep.Spec.Template.Labels, svc.Spec.Selector)
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, "webhook", svc.Spec.Ports[0].TargetPort.StrVal)
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	read(t, "webhook/validating_webhook_configuration.yaml", &vwc)
	require.Len(t, vwc.Webhooks, 1)
	ref := vwc.Webhooks[0].ClientConfig.Service
	require.NotNil(t, ref)
	assert.Equal(t, admission.ModulePath, *ref.Path)
	assert.Equal(t, svc.Name, ref.Name)
	assert.Equal(t, svc.Namespace, ref.Namespace)

	var secret string
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			secret = v.Secret.SecretName
		}
	}
	certs := string(read(t, "certmanager/certificate.yaml", nil))
	assert.Contains(t, certs, "secretName: "+secret)
	assert.Contains(t, certs, "- "+svc.Name+"."+svc.Namespace+".svc\n")
	assert.Equal(t, svc.Namespace+"/"+secret, vwc.Annotations["cert-manager.io/inject-ca-from"])

	var ns corev1.Namespace
	read(t, "manager/namespace.yaml", &ns)
	assert.Equal(t, "privileged", ns.Labels["pod-security.kubernetes.io/enforce"])
	assert.Equal(t, dep.Namespace, ns.Name)
	kust := string(read(t, "kustomization.yaml", nil))
	assert.Contains(t, kust, "namespace: "+ns.Name)
	assert.True(t, strings.Contains(kust, "name: "+c.Image), "kustomization sets the image of %q", c.Image)
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
