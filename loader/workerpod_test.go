package loader_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
)

func podRequest(action loader.Action, firmware bool) loader.PodRequest {
	cfg := v1beta1.ModuleConfig{
		KernelVersion:  "6.1.0-56-amd64",
		ContainerImage: "registry.example.com/acme/nic:6.1.0-56-amd64",
		Modprobe:       v1beta1.ModprobeSpec{ModuleName: "nic_drv", DirName: "/opt", Parameters: []string{"debug=1"}},
	}
	if firmware {
		cfg.Modprobe.FirmwarePath = "/firmware"
	}
	return loader.PodRequest{
		Node: "worker-1", Module: "nic", Namespace: "drivers", Action: action, Config: cfg,
		ServiceAccountName: "kmm-worker", ImageRepoSecret: &corev1.LocalObjectReference{Name: "pull"},
		Tolerations:   []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		ModuleVersion: "1.2",
	}
}

func TestWorkerPod(t *testing.T) {
	pod, err := loader.WorkerPod(podRequest(loader.ActionLoad, false), "quay.io/kmmkit/kmm:v0.1")
	require.NoError(t, err)
	assert.Equal(t, "kmm-worker-worker-1-nic", pod.Name)
	assert.Equal(t, "drivers", pod.Namespace)
	assert.Equal(t, "nic", pod.Labels[loader.LabelModuleName])
	assert.Equal(t, "Load", pod.Labels[loader.LabelWorkerAction])
	assert.Equal(t, "worker-1", pod.Spec.NodeName)
	assert.Equal(t, corev1.RestartPolicyOnFailure, pod.Spec.RestartPolicy)
	assert.Equal(t, "kmm-worker", pod.Spec.ServiceAccountName)
	assert.Equal(t, []corev1.LocalObjectReference{{Name: "pull"}}, pod.Spec.ImagePullSecrets)
	assert.Empty(t, pod.Spec.InitContainers, "the worker pulls the image itself: no shell needed in it")
	c := pod.Spec.Containers[0]
	assert.Equal(t, []string{"/kmm"}, c.Command)
	assert.Equal(t, "worker load --config /etc/kmm-worker/config.yaml --pull-dir /var/run/kmmkit/images --firmware-host-path /lib/firmware --docker-config /var/run/kmmkit/pull-secret", strings.Join(c.Args, " "))
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "host-modules", MountPath: "/lib/modules", ReadOnly: true}, "the worker reads the kernel's vermagic from its modules")
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "pull-secret", MountPath: "/var/run/kmmkit/pull-secret", ReadOnly: true})
	for _, v := range pod.Spec.Volumes {
		switch v.Name {
		case "host-modules":
			assert.Equal(t, &corev1.HostPathVolumeSource{Path: "/lib/modules", Type: ptr.To(corev1.HostPathDirectory)}, v.HostPath)
		case "pull-secret":
			assert.Equal(t, &corev1.SecretVolumeSource{SecretName: "pull"}, v.Secret, "the whole secret: .dockerconfigjson or .dockercfg, whichever it has")
		}
	}
	assert.Equal(t, []corev1.Capability{"SYS_MODULE"}, c.SecurityContext.Capabilities.Add)
	assert.Nil(t, c.SecurityContext.Privileged, "not privileged without firmware")
	var cfg v1beta1.ModuleConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte(pod.Annotations[loader.AnnotationWorkerConfig]), &cfg))
	assert.Equal(t, "nic_drv", cfg.Modprobe.ModuleName)
	_, err = v1beta1.DecodeModuleConfig([]byte(pod.Annotations[loader.AnnotationWorkerConfig]))
	require.NoError(t, err, "the worker reads back what the pod carries")
	assert.Equal(t, "1.2", pod.Annotations[loader.AnnotationModuleVersion])
	assert.Contains(t, pod.Annotations[loader.AnnotationTolerations], "key: gpu")

	fw, err := loader.WorkerPod(podRequest(loader.ActionLoad, true), "quay.io/kmmkit/kmm:v0.1", loader.WithFirmwareHostPath("/var/lib/firmware"))
	require.NoError(t, err)
	fc := fw.Spec.Containers[0]
	assert.True(t, *fc.SecurityContext.Privileged, "writing the firmware search path needs sysfs")
	assert.Contains(t, fc.Args, "--set-firmware-class-path")
	assert.Contains(t, fc.VolumeMounts, corev1.VolumeMount{Name: "firmware", MountPath: "/var/lib/firmware"})
	assert.NotEqual(t, pod.Annotations[loader.AnnotationWorkerHash], fw.Annotations[loader.AnnotationWorkerHash])

	un, err := loader.WorkerPod(podRequest(loader.ActionUnload, true), "quay.io/kmmkit/kmm:v0.1")
	require.NoError(t, err)
	assert.Equal(t, "Unload", un.Labels[loader.LabelWorkerAction])
	assert.Nil(t, un.Spec.Containers[0].SecurityContext.Privileged, "unload only removes files")
	assert.Equal(t, "unload", un.Spec.Containers[0].Args[1])

	again, err := loader.WorkerPod(podRequest(loader.ActionLoad, false), "quay.io/kmmkit/kmm:v0.1")
	require.NoError(t, err)
	assert.Equal(t, pod.Annotations[loader.AnnotationWorkerHash], again.Annotations[loader.AnnotationWorkerHash], "the hash is stable")

	_, err = loader.WorkerPod(loader.PodRequest{Node: "n", Module: "m", Namespace: "ns", Action: "Reload"}, "x")
	assert.ErrorContains(t, err, `unknown worker action "Reload"`)
	_, err = loader.WorkerPod(podRequest(loader.ActionLoad, false), "")
	assert.ErrorContains(t, err, "no worker image")
}

// TestWorkerPodCABundle: a CA bundle ConfigMap or Secret is mounted, key
// to ca-bundle.crt, and given to the worker as --ca-file, on load and on
// unload; bad names, bad keys and two bundles are refused, naming the
// option.
func TestWorkerPodCABundle(t *testing.T) {
	plain, err := loader.WorkerPod(podRequest(loader.ActionLoad, false), "w")
	require.NoError(t, err)
	for _, c := range []struct {
		opt  loader.Option
		want corev1.VolumeSource
	}{
		{loader.WithCABundleConfigMap("trusted-ca", ""), corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "trusted-ca"},
			Items:                []corev1.KeyToPath{{Key: loader.DefaultCABundleKey, Path: "ca-bundle.crt"}}}}},
		{loader.WithCABundleSecret("registry-tls", "ca.crt"), corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: "registry-tls", Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca-bundle.crt"}}}}},
	} {
		for _, action := range []loader.Action{loader.ActionLoad, loader.ActionUnload} {
			pod, err := loader.WorkerPod(podRequest(action, false), "w", c.opt)
			require.NoError(t, err)
			var vol *corev1.Volume
			for i := range pod.Spec.Volumes {
				if pod.Spec.Volumes[i].Name == "registry-ca" {
					vol = &pod.Spec.Volumes[i]
				}
			}
			require.NotNil(t, vol, "%s", action)
			assert.Equal(t, c.want, vol.VolumeSource)
			ctr := pod.Spec.Containers[0]
			assert.Contains(t, ctr.VolumeMounts, corev1.VolumeMount{Name: "registry-ca", MountPath: loader.WorkerCADir, ReadOnly: true})
			assert.Equal(t, []string{"--ca-file", loader.WorkerCADir + "/ca-bundle.crt"}, ctr.Args[len(ctr.Args)-2:])
			if action == loader.ActionLoad {
				assert.NotEqual(t, plain.Annotations[loader.AnnotationWorkerHash], pod.Annotations[loader.AnnotationWorkerHash],
					"a worker without the CA is outdated")
			}
		}
	}
	for want, opts := range map[string][]loader.Option{
		`pod loader: WithCABundleConfigMap("Bad_Name", "ca-bundle.crt"): the name is not a valid ConfigMap name`: {loader.WithCABundleConfigMap("Bad_Name", "")},
		`pod loader: WithCABundleSecret("ca", "a/b"): the key is not a valid key`:                                {loader.WithCABundleSecret("ca", "a/b")},
		"pod loader: WithCABundleConfigMap and WithCABundleSecret: give one CA bundle":                           {loader.WithCABundleConfigMap("a", ""), loader.WithCABundleSecret("b", "")},
	} {
		_, err := loader.WorkerPod(podRequest(loader.ActionLoad, false), "w", opts...)
		assert.ErrorContains(t, err, want)
		_, err = loader.NewPodLoader(k8sfake.NewClientset(), "w", opts...)
		assert.ErrorContains(t, err, want, "NewPodLoader checks the same options")
	}
}

// TestNewPodLoaderRefusesBadOptions: what NewPodLoader cannot use is
// refused, naming the option.
func TestNewPodLoaderRefusesBadOptions(t *testing.T) {
	for want, opt := range map[string]loader.Option{
		`pod loader: WithWorkerBinary("kmm"): the path must be absolute`:                      loader.WithWorkerBinary("kmm"),
		"pod loader: WithRunAsUser(-1): a user ID is not negative":                            loader.WithRunAsUser(-1),
		"pod loader: WithStuckTimeout(-1s): the timeout must not be negative (0 disables it)": loader.WithStuckTimeout(-time.Second),
		"pod loader: WithClock(nil): no clock":                                                loader.WithClock(nil),
	} {
		_, err := loader.NewPodLoader(k8sfake.NewClientset(), "w", opt)
		assert.EqualError(t, err, want)
	}
	_, err := loader.NewPodLoader(nil, "w")
	assert.EqualError(t, err, "pod loader: NewPodLoader needs a clientset")
}

func TestWorkerPodName(t *testing.T) {
	assert.Equal(t, "kmm-worker-n1-mod", loader.WorkerPodName("n1", "mod"))
	long := loader.WorkerPodName(strings.Repeat("node", 20)+".example.com", "nic-driver")
	assert.LessOrEqual(t, len(long), 63)
	assert.Empty(t, validation.IsDNS1123Subdomain(long))
	assert.NotEqual(t, long, loader.WorkerPodName(strings.Repeat("node", 20)+".example.org", "nic-driver"))
}

// TestWorkerPodIdentity: a worker of an operator's cluster-scoped
// resource runs in the namespace the operator names, carries that
// operator's labels and none of KMM's, so KMM never takes it for its own.
func TestWorkerPodIdentity(t *testing.T) {
	req := podRequest(loader.ActionLoad, false)
	kmmPod, err := loader.WorkerPod(req, "w")
	require.NoError(t, err)
	req.Identity = identity.Domain{Name: "nic.acme.io", Kind: "NICFleet"}
	req.Namespace, req.PodNamespace = "", "acme-system"
	pod, err := loader.WorkerPod(req, "w")
	require.NoError(t, err)
	o := req.Identity.Owner("", "nic")
	assert.Equal(t, o.WorkerPodName("worker-1"), pod.Name)
	assert.Equal(t, "acme-system", pod.Namespace)
	assert.Equal(t, o.WorkerLabels("Load"), pod.Labels)
	for k := range pod.Labels {
		assert.False(t, strings.HasPrefix(k, "kmm."), "KMM key %s on another identity's worker", k)
	}
	assert.Equal(t, kmmPod.Annotations, pod.Annotations, "the worker reads the same annotations")
	assert.Equal(t, kmmPod.Spec, pod.Spec)

	req.PodNamespace = ""
	_, err = loader.WorkerPod(req, "w")
	assert.ErrorContains(t, err, "needs a node, a module and a namespace")
	req.Identity, req.PodNamespace = identity.Domain{}, "acme-system"
	_, err = loader.WorkerPod(req, "w")
	assert.ErrorContains(t, err, "a cluster-scoped owner needs a Domain")
}

// TestWorkerPodAcceptedByAPIServer creates the worker Pods in the test
// kube-apiserver: the API server validates every field.
func TestWorkerPodAcceptedByAPIServer(t *testing.T) {
	cs, err := kubernetes.NewForConfig(testenv.RESTConfig(t))
	require.NoError(t, err)
	ctx := context.Background()
	ns := fmt.Sprintf("kmmkit-worker-%d", rand.Uint32())
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kmm-worker"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// A legacy kubernetes.io/dockercfg pull secret, which has no
	// .dockerconfigjson key: the Pod mounts it whole.
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy-pull"}, Type: corev1.SecretTypeDockercfg,
		Data: map[string][]byte{corev1.DockerConfigKey: []byte(`{"registry.example.com":{"auth":"dTpw"}}`)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	for _, c := range []struct {
		action   loader.Action
		firmware bool
		secret   string
	}{{loader.ActionLoad, false, "pull"}, {loader.ActionLoad, true, "pull"}, {loader.ActionUnload, true, "pull"}, {loader.ActionLoad, false, "legacy-pull"}} {
		req := podRequest(c.action, c.firmware)
		req.Namespace = ns
		req.ImageRepoSecret = &corev1.LocalObjectReference{Name: c.secret}
		req.Node = fmt.Sprintf("node-%s-%t-%s", strings.ToLower(string(c.action)), c.firmware, c.secret)
		pod, err := loader.WorkerPod(req, "quay.io/kmmkit/kmm:v0.1")
		require.NoError(t, err)
		created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		require.NoError(t, err, "%s firmware=%t", c.action, c.firmware)
		assert.Equal(t, pod.Spec.NodeName, created.Spec.NodeName)
		assert.Equal(t, pod.Annotations[loader.AnnotationWorkerConfig], created.Annotations[loader.AnnotationWorkerConfig])
		for _, v := range created.Spec.Volumes {
			if v.Name == "pull-secret" {
				assert.Equal(t, c.secret, v.Secret.SecretName)
				assert.Empty(t, v.Secret.Items, "no key is required of the secret")
			}
		}
	}
	// A registry CA from a ConfigMap and from a Secret: the API server
	// takes the volume, the mount and the --ca-file argument as they are.
	for i, opt := range []loader.Option{loader.WithCABundleConfigMap("registry-ca", ""), loader.WithCABundleSecret("registry-ca", "ca.pem")} {
		for _, action := range []loader.Action{loader.ActionLoad, loader.ActionUnload} {
			req := podRequest(action, false)
			req.Namespace, req.Node = ns, fmt.Sprintf("node-ca-%d-%s", i, strings.ToLower(string(action)))
			pod, err := loader.WorkerPod(req, "quay.io/kmmkit/kmm:v0.1", opt)
			require.NoError(t, err)
			created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			require.NoError(t, err, "CA bundle %d, %s", i, action)
			var ca *corev1.Volume
			for i := range created.Spec.Volumes {
				if created.Spec.Volumes[i].Name == "registry-ca" {
					ca = &created.Spec.Volumes[i]
				}
			}
			require.NotNil(t, ca, "the CA volume is kept")
			if ca.ConfigMap != nil {
				assert.Equal(t, "registry-ca", ca.ConfigMap.Name)
				assert.Equal(t, []corev1.KeyToPath{{Key: loader.DefaultCABundleKey, Path: "ca-bundle.crt"}}, ca.ConfigMap.Items)
			} else {
				require.NotNil(t, ca.Secret)
				assert.Equal(t, "registry-ca", ca.Secret.SecretName)
				assert.Equal(t, []corev1.KeyToPath{{Key: "ca.pem", Path: "ca-bundle.crt"}}, ca.Secret.Items)
			}
			c := created.Spec.Containers[0]
			assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "registry-ca", MountPath: loader.WorkerCADir, ReadOnly: true})
			assert.Contains(t, strings.Join(c.Args, " "), "--ca-file "+loader.WorkerCADir+"/ca-bundle.crt")
		}
	}
	// A namespaced worker may be owned by a cluster-scoped owner (an owner
	// reference names no namespace); the API server takes it.
	req := podRequest(loader.ActionLoad, false)
	req.Identity, req.Namespace, req.PodNamespace = identity.Domain{Name: "nic.acme.io", Kind: "NICFleet"}, "", ns
	pod, err := loader.WorkerPod(req, "quay.io/kmmkit/kmm:v0.1")
	require.NoError(t, err)
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "nic.acme.io/v1", Kind: "NICFleet", Name: "nic", UID: "0b8f0c1e-1f7d-4a51-9b1e-6c1d3f7a9e21"}}
	created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, pod.Labels, created.Labels)
}
