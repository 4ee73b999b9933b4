package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/controllerruntime/fakekubelet"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/certtest"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/crtest"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/registry/pullsecret"
)

const (
	operatorNS = "kmm-operator-system"
	kver       = "6.1.0-56-amd64"
)

// documents splits a multi-document YAML manifest into objects.
func documents(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range bytes.Split(manifest, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		require.NoError(t, yaml.Unmarshal(doc, &u.Object))
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	return out
}

// apply writes objs with server-side apply, so that a rerun (or what an
// earlier run left) converges instead of conflicting.
func apply(t *testing.T, ctx context.Context, c client.Client, objs ...*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kmmkit-test"), client.ForceOwnership)
		require.NoError(t, err, "applying %s %s", u.GetKind(), u.GetName())
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// operatorLog keeps the operator's output, and copies it to the test log.
type operatorLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *operatorLog) read(t *testing.T, r io.Reader) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, s.Text())
		l.mu.Unlock()
		t.Log("operator: " + s.Text())
	}
}

func (l *operatorLog) matching(word string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return out
}

// TestOperator deploys the drop-in operator as its manifests describe it
// on the test kube-apiserver: it applies config/ (rendered as kubectl
// kustomize renders it) — the CRD, the Namespace, the ServiceAccount, the generated
// role and its binding, the leader-election role, the Deployment, the
// webhook Service and ValidatingWebhookConfiguration — and, as there is
// no kubelet to run the Deployment, runs the operator binary with the
// ServiceAccount's own token, so that a verb missing from the role fails
// the test. Playing the kubelet for the worker Pods, it drives
// examples/modules/kmm-ci-a.yaml (pointed at the TLS registry, with its
// pull secret) to Loaded=True on the nodes it selects; the API server
// refuses an invalid Module through the operator's webhook; the Module in
// a namespace without the privileged Pod Security level reports why no
// worker runs; deleting the Module unloads it.
//
// Test-only changes to the manifests: the webhook is called by URL on
// 127.0.0.1 (there is no Service routing without kube-proxy), with the
// test's CA, and only for the test's namespaces; the operator watches
// only those namespaces, since other tests share the API server.
func TestOperator(t *testing.T) {
	env := crtest.New(t)
	regs := testenv.Registry(t)
	ctx := crtest.Context(t)
	ns := env.Namespace(t, "op")
	baseline := env.Namespace(t, "baseline")
	for n, level := range map[string]string{ns: "privileged", baseline: "baseline"} {
		_, err := env.Clientset.CoreV1().Namespaces().Patch(ctx, n, types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"`+level+`","kmmkit.io/webhook-test":"`+env.Run+`"}}}`), metav1.PatchOptions{})
		require.NoError(t, err)
	}

	// The manifests, as kubectl apply -k would send them.
	rendered := kustomize(t, "../../config")
	dir := t.TempDir()
	caPEM := certtest.Write(t, dir)
	webhookPort := freePort(t)
	var vwc *unstructured.Unstructured
	var objs []*unstructured.Unstructured
	kinds := map[string]bool{}
	for _, u := range documents(t, rendered) {
		kinds[u.GetKind()] = true
		if u.GetKind() == "ValidatingWebhookConfiguration" {
			vwc = u
			continue
		}
		objs = append(objs, u)
	}
	for _, k := range []string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
		"Role", "RoleBinding", "Deployment", "Service", "ValidatingWebhookConfiguration"} {
		require.True(t, kinds[k], "config/ has no %s", k)
	}
	apply(t, ctx, env.Client, objs...)
	require.NotNil(t, vwc)

	// The operator's own Pod passes the restricted Pod Security level.
	restrictedNS := env.Namespace(t, "restricted")
	_, err := env.Clientset.CoreV1().Namespaces().Patch(ctx, restrictedNS, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"restricted"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	for _, u := range objs {
		if u.GetKind() != "Deployment" {
			continue
		}
		var dep appsv1.Deployment
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &dep))
		_, err = env.Clientset.CoreV1().ServiceAccounts(restrictedNS).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: dep.Spec.Template.Spec.ServiceAccountName}}, metav1.CreateOptions{})
		require.NoError(t, err)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "kmm-operator-", Labels: dep.Spec.Template.Labels}, Spec: dep.Spec.Template.Spec}
		_, err = env.Clientset.CoreV1().Pods(restrictedNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		require.NoError(t, err, "the operator's Pod in a restricted namespace")
	}
	hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	require.Len(t, hooks, 1)
	hook := hooks[0].(map[string]any)
	path, _, _ := unstructured.NestedString(hook, "clientConfig", "service", "path")
	require.Equal(t, "/validate-kmm-sigs-x-k8s-io-v1beta1-module", path, "the Service path is the one the operator serves")
	hook["clientConfig"] = map[string]any{"url": "https://127.0.0.1:" + strconv.Itoa(webhookPort) + path, "caBundle": base64.StdEncoding.EncodeToString(caPEM)}
	hook["namespaceSelector"] = map[string]any{"matchLabels": map[string]any{"kmmkit.io/webhook-test": env.Run}}
	require.NoError(t, unstructured.SetNestedSlice(vwc.Object, hooks, "webhooks"))
	vwc.SetName("kmm-operator-" + env.Run)
	vwc.SetAnnotations(nil)
	apply(t, ctx, env.Client, vwc)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), vwc) })

	// The ServiceAccount's own credentials: a token from the TokenRequest API.
	tok, err := env.Clientset.CoreV1().ServiceAccounts(operatorNS).CreateToken(ctx, "kmm-operator",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// The operator reaches the API server through a proxy that notes
	// every request and every RBAC refusal.
	proxyDir := filepath.Join(dir, "proxy")
	require.NoError(t, os.Mkdir(proxyDir, 0o700))
	proxyCA := certtest.Write(t, proxyDir)
	proxy := startAuditProxy(t, env.Config, proxyDir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"test": {Server: proxy.URL, CertificateAuthorityData: proxyCA}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"kmm-operator": {Token: tok.Status.Token}},
		Contexts:       map[string]*clientcmdapi.Context{"test": {Cluster: "test", AuthInfo: "kmm-operator"}},
		CurrentContext: "test",
	}, kubeconfig))
	// A lease left by an earlier run would hold the election for its
	// duration.
	_ = env.Clientset.CoordinationV1().Leases(operatorNS).Delete(ctx, "kmm-operator.kmm.sigs.x-k8s.io", metav1.DeleteOptions{})

	// The example Module, pointed at the TLS registry, in the test's
	// namespace; its pull secret, its worker service account, its image.
	example, err := os.ReadFile("../../../examples/modules/kmm-ci-a.yaml")
	require.NoError(t, err)
	manifest := strings.ReplaceAll(string(example), "registry.example.com:5000", regs.TLS)
	manifest = strings.ReplaceAll(manifest, "registry.example.com", regs.TLS)
	manifest = strings.ReplaceAll(manifest, "namespace: kmm-demo", "namespace: "+ns)
	exampleObjs := documents(t, []byte(manifest))
	auth := fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, regs.TLS, regs.User, regs.Password)
	for _, n := range []string{ns, baseline} {
		_, err = env.Clientset.CoreV1().Secrets(n).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "registry-pull-secret"},
			Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(auth)}}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = env.Clientset.CoreV1().ServiceAccounts(n).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kmm-ci-worker"}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	regCA, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	rc, err := registry.NewClient(registry.WithCABundle(regCA))
	require.NoError(t, err)
	pullAuth, err := pullsecret.Keychain(ctx, env.Clientset, ns, "registry-pull-secret")
	require.NoError(t, err)
	img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kver, Modules: []assemble.File{
		{Path: "extra/kmm_ci_a.ko", Data: elftest.Module{}.Bytes()}, {Path: "extra/kmm_ci_b.ko", Data: elftest.Module{}.Bytes()}}})
	require.NoError(t, err)
	_, err = rc.Push(ctx, registry.Request{Image: regs.TLS + "/kmm/kmm-ci-a:" + kver, Auth: pullAuth}, img)
	require.NoError(t, err)

	// Nodes: two the Module selects (one with a taint it tolerates), one
	// it does not.
	selected := map[string]string{"node-role.kubernetes.io/worker": "", "feature.node.kubernetes.io/kernel-version.major": "6"}
	w1, w2, other := env.Run+"-w1", env.Run+"-w2", env.Run+"-infra"
	env.ReadyNode(t, w1, selected, kver, "boot-1")
	env.ReadyNode(t, w2, selected, kver, "boot-1")
	env.ReadyNode(t, other, map[string]string{"node-role.kubernetes.io/infra": ""}, kver, "boot-1")
	_, err = env.Clientset.CoreV1().Nodes().Patch(ctx, w2, types.MergePatchType,
		[]byte(`{"spec":{"taints":[{"key":"example.com/gpu","effect":"NoSchedule"}]}}`), metav1.PatchOptions{})
	require.NoError(t, err)

	// The operator, as the Deployment runs it, with the test's addresses.
	bin := filepath.Join(dir, "kmm-operator")
	gobuild := exec.Command("go", "build", "-o", bin, ".")
	gobuild.Stderr = os.Stderr
	require.NoError(t, gobuild.Run(), "building the operator")
	certDir := filepath.Join(dir, "certs")
	require.NoError(t, os.Mkdir(certDir, 0o700))
	require.NoError(t, os.Rename(filepath.Join(dir, "tls.crt"), filepath.Join(certDir, "tls.crt")))
	require.NoError(t, os.Rename(filepath.Join(dir, "tls.key"), filepath.Join(certDir, "tls.key")))
	probePort, metricsPort := freePort(t), freePort(t)
	op := exec.Command(bin, "--kubeconfig="+kubeconfig, "--leader-elect", "--leader-election-namespace="+operatorNS,
		"--watch-namespaces="+ns+","+baseline, "--webhook-host=127.0.0.1", "--webhook-port="+strconv.Itoa(webhookPort),
		"--webhook-cert-dir="+certDir, "--metrics-bind-address=127.0.0.1:"+strconv.Itoa(metricsPort),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(probePort), "--registry-ca-file="+regs.CAFile,
		"--zap-log-level=debug")
	op.Env = append(os.Environ(), "KMM_WORKER_IMAGE=quay.io/kmmkit/kmm:e2e")
	out, err := op.StderrPipe()
	require.NoError(t, err)
	op.Stdout = op.Stderr
	logs := &operatorLog{}
	require.NoError(t, op.Start())
	readDone := make(chan struct{})
	go func() { logs.read(t, out); close(readDone) }()
	exited := make(chan error, 1)
	go func() { <-readDone; exited <- op.Wait() }()
	t.Cleanup(func() {
		_ = op.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = op.Process.Kill()
		}
	})
	crtest.Eventually(t, "the operator never became ready", func(context.Context) (bool, error) {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(probePort) + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	kubelet, err := fakekubelet.Start(ctx, env.Clientset, fakekubelet.Options{Namespace: ns})
	require.NoError(t, err)

	// The example goes through the webhook and loads on w1 and w2.
	apply(t, ctx, env.Client, exampleObjs...)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	require.NoError(t, kubelet.Wait(wctx, loader.ActionLoad, 2))
	key := client.ObjectKey{Namespace: ns, Name: "kmm-ci-a"}
	var m v1beta1.Module
	crtest.Eventually(t, "kmm-ci-a never showed Loaded=True on both nodes", func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, key, &m); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionLoaded)
		return c != nil && c.Status == metav1.ConditionTrue && m.Status.ModuleLoader.AvailableNumber == 2, nil
	})
	assert.Equal(t, int32(2), m.Status.ModuleLoader.DesiredNumber)
	assert.Contains(t, m.Finalizers, kmm.Finalizer)
	ranOn := map[string]bool{}
	for _, p := range kubelet.Pods() {
		ranOn[p.Spec.NodeName] = true
		assert.Equal(t, "kmm-ci-worker", p.Spec.ServiceAccountName)
		assert.True(t, ptr.Deref(p.Spec.Containers[0].SecurityContext.Privileged, false), "the Module copies firmware: the worker is privileged")
	}
	assert.Equal(t, map[string]bool{w1: true, w2: true}, ranOn)
	for _, n := range []string{w1, w2} {
		node, err := env.Clientset.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Contains(t, node.Labels, identity.Domain{}.Owner(ns, "kmm-ci-a").ReadyLabel())
	}

	// A node on a kernel whose image is missing: the operator builds it
	// with Kaniko (reading the Dockerfile ConfigMap and the build
	// secrets); the build fails, and the Module names the kernel. Then the
	// node goes, and the Module is whole again.
	for _, name := range []string{"kmm-ci-source-token", "kmm-ci-debian-mirror"} {
		_, err = env.Clientset.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
			StringData: map[string]string{"token": "t"}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	const k57 = "6.1.0-57-amd64"
	w3 := env.Run + "-w3"
	env.ReadyNode(t, w3, selected, k57, "boot-1")
	var build corev1.Pod
	crtest.Eventually(t, "no Kaniko build Pod for "+k57, func(ctx context.Context) (bool, error) {
		pods, err := env.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "kmm.node.kubernetes.io/resource-type=BuildImage"})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		build = pods.Items[0]
		return true, nil
	})
	build.Status.Phase = corev1.PodFailed
	_, err = env.Clientset.CoreV1().Pods(ns).UpdateStatus(ctx, &build, metav1.UpdateOptions{})
	require.NoError(t, err)
	var images *metav1.Condition
	crtest.Eventually(t, "the failed build never showed", func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, key, &m); err != nil {
			return false, err
		}
		images = meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionImagesReady)
		return images != nil && images.Reason == string(reason.BuildFailed), nil
	})
	assert.Equal(t, metav1.ConditionFalse, images.Status)
	assert.Contains(t, images.Message, k57)
	assert.Contains(t, images.Message, "build pod "+build.Name+" failed")
	assert.Equal(t, int32(3), m.Status.ModuleLoader.DesiredNumber, "the node without a driver is desired")
	assert.Equal(t, int32(2), m.Status.ModuleLoader.AvailableNumber)
	require.NoError(t, env.Clientset.CoreV1().Nodes().Delete(ctx, w3, metav1.DeleteOptions{}))
	crtest.Eventually(t, "kmm-ci-a never came back to Loaded=True without the node", func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, key, &m); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(m.Status.Conditions, kmm.ConditionLoaded)
		return c != nil && c.Status == metav1.ConditionTrue && m.Status.ModuleLoader.DesiredNumber == 2, nil
	})

	// The operator's webhook refuses an invalid Module, naming the field.
	var invalid v1beta1.Module
	require.NoError(t, yaml.Unmarshal([]byte(`{"metadata":{"name":"no-mapping","namespace":"`+ns+`"},
		"spec":{"selector":{},"moduleLoader":{"container":{"modprobe":{"moduleName":"x"},"kernelMappings":[{"regexp":"(","containerImage":"r/x:1"}]}}}}`), &invalid))
	var refused error
	crtest.Eventually(t, "the API server never refused the invalid Module", func(ctx context.Context) (bool, error) {
		refused = env.Client.Create(ctx, invalid.DeepCopy())
		if refused == nil {
			return false, env.Client.Delete(ctx, invalid.DeepCopy())
		}
		return true, nil
	})
	require.True(t, apierrors.IsInvalid(refused), "%v", refused)
	assert.Contains(t, refused.Error(), `admission webhook "vmodule.kmm.sigs.x-k8s.io" denied the request`)
	assert.Contains(t, refused.Error(), "spec.moduleLoader.container.kernelMappings[0].regexp")

	// Without the privileged level, the API server refuses the worker,
	// and the Module says so, naming the nodes and the Pod Security level.
	restricted := m.DeepCopy()
	restricted.ObjectMeta = metav1.ObjectMeta{Namespace: baseline, Name: "kmm-ci-a"}
	restricted.Status = v1beta1.ModuleStatus{}
	require.NoError(t, env.Client.Create(ctx, restricted))
	var degraded *metav1.Condition
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(restricted), restricted); err != nil {
			return false, err
		}
		degraded = meta.FindStatusCondition(restricted.Status.Conditions, kmm.ConditionDegraded)
		return degraded != nil && degraded.Status == metav1.ConditionTrue, nil
	})
	require.NoError(t, err, "the Module in the baseline namespace never said why it does not load: %+v", restricted.Status.Conditions)
	assert.Equal(t, string(reason.WorkerPodRejected), degraded.Reason)
	for _, n := range []string{w1, w2} {
		assert.Contains(t, degraded.Message, "node "+n+": WorkerPodRejected: the API server refused worker pod")
	}
	assert.Contains(t, degraded.Message, `violates PodSecurity "baseline:latest": hostPath volumes`)
	loaded := meta.FindStatusCondition(restricted.Status.Conditions, kmm.ConditionLoaded)
	require.NotNil(t, loaded)
	assert.Equal(t, metav1.ConditionFalse, loaded.Status)
	assert.Equal(t, int32(0), restricted.Status.ModuleLoader.AvailableNumber)
	require.NoError(t, env.Client.Delete(ctx, restricted))

	// Metrics are served.
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(metricsPort) + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), "kmm_module_num")

	// Deleting the Module unloads it from both nodes, then releases it.
	require.NoError(t, env.Client.Delete(ctx, &m))
	require.NoError(t, kubelet.Wait(wctx, loader.ActionUnload, 2))
	crtest.Eventually(t, "kmm-ci-a was not released after the unload", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, key, &v1beta1.Module{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	node, err := env.Clientset.CoreV1().Nodes().Get(ctx, w1, metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, node.Labels, identity.Domain{}.Owner(ns, "kmm-ci-a").ReadyLabel())

	// Under exactly the generated roles, RBAC refused nothing, the
	// operator asked for nothing they do not grant, and it used every
	// rule but those only some clusters or events need.
	assert.Empty(t, proxy.Refused(), "the operator was refused something its role should grant")
	assert.Empty(t, logs.matching("forbidden: User"), "the operator logged an RBAC refusal")
	granted := map[string]bool{}
	for _, f := range []string{"../../config/rbac/role.yaml", "../../config/rbac/leader_election_role.yaml"} {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var role rbacv1.ClusterRole
		require.NoError(t, yaml.Unmarshal(raw, &role))
		for _, r := range role.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						granted[v+" "+g+"/"+res] = true
					}
				}
			}
		}
	}
	used := proxy.Used()
	t.Logf("requests the operator made: %s", strings.Join(used, ", "))
	for _, u := range used {
		assert.True(t, granted[u], "the operator made %q, which its roles do not grant", u)
	}
	optional := map[string]string{
		"patch /events":                 "the recorder patches an event only when it repeats",
		"get /pods":                     "the PodLoader reads a worker afresh only when the cache contradicts its own writes",
		"get kmm.sigs.x-k8s.io/modules": "the Reconciler reads a Module afresh only after a conflict on its write",
		"update kmm.sigs.x-k8s.io/modules/finalizers": "only under the OwnerReferencesPermissionEnforcement admission plugin",
		"create apps/daemonsets":                      "only for a Module with spec.devicePlugin (none here)",
		"update apps/daemonsets":                      "only for a Module with spec.devicePlugin (none here)",
		"delete apps/daemonsets":                      "only for a Module with spec.devicePlugin (none here)",
	}
	for g := range granted {
		if _, ok := optional[g]; !ok {
			assert.Contains(t, used, g, "the roles grant %q, which the operator never used", g)
		}
	}
	assert.NotEmpty(t, logs.matching("successfully acquired lease"), "leader election under the leader-election role")
}

// kustomize renders dir as `kubectl kustomize` does, with kustomize's own
// library (the one kubectl embeds).
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	abs, err := filepath.Abs(dir)
	require.NoError(t, err)
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy // kubectl's order: namespaces and CRDs first
	res, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), abs)
	require.NoError(t, err, "kustomize %s", dir)
	out, err := res.AsYaml()
	require.NoError(t, err)
	return out
}
