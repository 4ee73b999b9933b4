package kaniko_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/builder/kaniko"
	"github.com/kmmkit/kmmkit/builder/publish"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

func request(t *testing.T, ns string) builder.Request {
	k, err := kernelmap.ParseKernel("6.1.0-56-amd64")
	require.NoError(t, err)
	return builder.Request{
		Namespace: ns, Module: "nic", Kernel: k, Image: "registry.example.com:5000/acme/nic:6.1.0-56-amd64",
		Dockerfile:           "ARG KERNEL_FULL_VERSION\nFROM debian:bookworm\nRUN echo ${KERNEL_FULL_VERSION}\n",
		BuildArgs:            []v1beta1.BuildArg{{Name: "KERNEL_VERSION", Value: "user"}, {Name: "GIT_REF", Value: "main"}},
		Secrets:              []corev1.LocalObjectReference{{Name: "build-token"}},
		BaseImageRegistryTLS: v1beta1.TLSOptions{Insecure: true},
		RegistryTLS:          v1beta1.TLSOptions{InsecureSkipTLSVerify: true},
		PullSecret:           &corev1.LocalObjectReference{Name: "push"},
		KanikoParams:         &v1beta1.KanikoParams{Tag: "v1.23.2-debug"},
		NodeSelector:         map[string]string{"kubernetes.io/arch": "amd64"},
	}
}

type env struct {
	cs   kubernetes.Interface
	ns   string
	real bool
}

func (e env) pods(t *testing.T) []corev1.Pod {
	l, err := e.cs.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: builder.LabelResourceType})
	require.NoError(t, err)
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
	return l.Items
}

func (e env) setStatus(t *testing.T, name string, phase corev1.PodPhase, term *corev1.ContainerStateTerminated) {
	ctx := context.Background()
	p, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	p.Status.Phase = phase
	cs := corev1.ContainerStatus{Name: "kaniko", Image: p.Spec.Containers[0].Image}
	if term != nil {
		cs.State.Terminated = term
	} else {
		cs.State.Running = &corev1.ContainerStateRunning{}
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	_, err = e.cs.CoreV1().Pods(e.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func runKaniko(t *testing.T, e env) {
	ctx := context.Background()
	clock := clocktesting.NewFakePassiveClock(time.Now().Truncate(time.Second))
	b, err := kaniko.New(e.cs,
		kaniko.WithImage("registry.example.com:5000/kaniko-project/executor:v1.23.2"), kaniko.WithGCDelay(time.Minute),
		kaniko.WithRetryPolicy(builder.RetryPolicy{MaxAttempts: 3, Backoff: time.Minute}),
		kaniko.WithClock(clock))
	require.NoError(t, err)
	req := request(t, e.ns)

	// A missing build secret is named.
	_, err = b.Sync(ctx, req)
	assert.ErrorContains(t, err, "build secret "+e.ns+"/build-token")
	_, err = e.cs.CoreV1().Secrets(e.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "build-token"}, StringData: map[string]string{"token": "t"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	// 1. Start: one Pod as KMM shapes it, and no duplicate on a second Sync.
	st, err := b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhasePending, st.Phase)
	assert.Equal(t, "nic-build-6-1-0-56-amd64", st.Name)
	_, err = b.Sync(ctx, req)
	require.NoError(t, err)
	pods := e.pods(t)
	require.Len(t, pods, 1)
	p := pods[0]
	assert.Equal(t, "nic", p.Labels[builder.LabelModuleName])
	assert.Equal(t, "BuildImage", p.Labels[builder.LabelResourceType])
	assert.Equal(t, "6-1-0-56-amd64", p.Labels[builder.LabelTargetKernel])
	firstHash := p.Annotations[builder.AnnotationHash]
	assert.Len(t, firstHash, 16)
	assert.Equal(t, corev1.RestartPolicyNever, p.Spec.RestartPolicy)
	c := p.Spec.Containers[0]
	assert.Equal(t, "registry.example.com:5000/kaniko-project/executor:v1.23.2-debug", c.Image, "the tag replaced, the registry port kept")
	assert.Equal(t, strings.Join([]string{
		"--destination registry.example.com:5000/acme/nic:6.1.0-56-amd64-kmmkit-unlinted --skip-tls-verify --insecure-pull",
		"--build-arg KERNEL_VERSION=6.1.0-56-amd64 --build-arg GIT_REF=main --build-arg KERNEL_FULL_VERSION=6.1.0-56-amd64",
		"--build-arg KERNEL_X=6 --build-arg KERNEL_XYZ=6.1.0 --build-arg KERNEL_Y=1 --build-arg KERNEL_Z=0",
		"--build-arg MOD_NAME=nic --build-arg MOD_NAMESPACE=" + e.ns + " --digest-file /dev/termination-log",
	}, " "), strings.Join(c.Args, " "))
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	assert.Equal(t, map[string]string{"dockerfile": "/workspace", "lib-modules": "/host/lib/modules",
		"secret-build-token": "/run/secrets/build-token", "pull-secret": "/kaniko/.docker"}, mounts)
	assert.Equal(t, req.Dockerfile, p.Annotations[kaniko.AnnotationDockerfile])
	assert.Equal(t, map[string]string{"kubernetes.io/arch": "amd64"}, p.Spec.NodeSelector)

	// 2. Running.
	e.setStatus(t, p.Name, corev1.PodRunning, nil)
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseRunning, st.Phase)

	// 3. A changed request replaces the running build.
	req.BuildArgs = append(req.BuildArgs, v1beta1.BuildArg{Name: "EXTRA", Value: "1"})
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	pods = e.pods(t)
	require.Len(t, pods, 1)
	argsHash := pods[0].Annotations[builder.AnnotationHash]
	assert.NotEqual(t, firstHash, argsHash)
	assert.Contains(t, pods[0].Spec.Containers[0].Args, "EXTRA=1")
	if e.real {
		// A changed secret too (the fake clientset keeps no resource
		// versions).
		sec, err := e.cs.CoreV1().Secrets(e.ns).Get(ctx, "build-token", metav1.GetOptions{})
		require.NoError(t, err)
		sec.StringData = map[string]string{"token": "t2"}
		_, err = e.cs.CoreV1().Secrets(e.ns).Update(ctx, sec, metav1.UpdateOptions{})
		require.NoError(t, err)
		_, err = b.Sync(ctx, req)
		require.NoError(t, err)
		pods = e.pods(t)
		require.Len(t, pods, 1)
		assert.NotEqual(t, argsHash, pods[0].Annotations[builder.AnnotationHash], "a changed secret replaces the build")
	}
	newHash := e.pods(t)[0].Annotations[builder.AnnotationHash]

	// 4. Failures: kept, retried with backoff, then final.
	for attempt := 1; attempt <= 3; attempt++ {
		name := req.Name(attempt)
		e.setStatus(t, name, corev1.PodFailed, &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error",
			FinishedAt: metav1.NewTime(clock.Now()), Message: "Step 3/3 : RUN make\nmake: *** No rule to make target 'modules'.  Stop.\nerror building image"})
		st, err = b.Sync(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, builder.PhaseFailed, st.Phase)
		assert.Contains(t, st.LogTail, "No rule to make target")
		assert.Contains(t, st.Message, "kaniko exited with code 1")
		if attempt == 3 {
			assert.True(t, st.Final)
			assert.Contains(t, st.Message, "attempt 3 of 3")
			break
		}
		assert.False(t, st.Final)
		assert.Equal(t, time.Minute*time.Duration(1<<(attempt-1)), st.RequeueAfter, "exponential backoff")
		clock.SetTime(clock.Now().Add(st.RequeueAfter))
		st, err = b.Sync(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, builder.PhasePending, st.Phase)
		assert.Equal(t, attempt+1, st.Attempt)
	}
	assert.Len(t, e.pods(t), 3, "failed builds are kept for inspection")
	assert.Equal(t, newHash, e.pods(t)[0].Annotations[builder.AnnotationHash])

	// 5. A fixed request replaces the failures; the Pod pushes to the
	// staging tag (played here: an in-process registry), the image is
	// linted and published at the request's image, with its digest, and
	// the Pod is collected after the GC delay.
	reg := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	rc, err := registry.NewClient()
	require.NoError(t, err)
	req.Dockerfile += "RUN true\n"
	req.Image, req.RegistryTLS, req.Modules = host+"/acme/nic:6.1.0-56-amd64", v1beta1.TLSOptions{Insecure: true}, []string{"nic"}
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	require.Len(t, e.pods(t), 1)
	assert.Contains(t, e.pods(t)[0].Spec.Containers[0].Args, host+"/acme/nic:6.1.0-56-amd64-kmmkit-unlinted")
	pushed := kanikoPush(t, rc, req, "/opt")
	e.setStatus(t, st.Name, corev1.PodSucceeded, &corev1.ContainerStateTerminated{ExitCode: 0, FinishedAt: metav1.NewTime(clock.Now()), Message: pushed})
	// Publishing reads the pull secret; while it is missing the build
	// waits, saying so.
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseRunning, st.Phase)
	assert.Contains(t, st.Message, "pushed its image; publishing it: pull secret "+e.ns+"/push")
	assert.Equal(t, 30*time.Second, st.RequeueAfter)
	_, err = e.cs.CoreV1().Secrets(e.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "push"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}}, metav1.CreateOptions{})
	require.NoError(t, err)
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase, st.Message)
	assert.Equal(t, pushed, st.Digest)
	assert.Equal(t, time.Minute, st.RequeueAfter)
	res, err := rc.Verify(ctx, registry.Request{Image: req.Image, TLS: req.RegistryTLS})
	require.NoError(t, err)
	assert.True(t, res.Exists, "published at the request's image")
	assert.Equal(t, pushed, res.Digest, "the same manifest")
	require.Len(t, e.pods(t), 1, "kept during the GC delay")
	clock.SetTime(clock.Now().Add(time.Minute))
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
	assert.Empty(t, e.pods(t), "collected")

	// 6. A build that pushes an image that would not load (its modules
	// under /lib/modules, not /opt/lib/modules) fails with ImageLintFailed
	// and the finding, finally; it is not published, and its Pod is kept.
	req.Image = host + "/acme/misplaced:6.1.0-56-amd64"
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	bad := kanikoPush(t, rc, req, "/")
	e.setStatus(t, st.Name, corev1.PodSucceeded, &corev1.ContainerStateTerminated{ExitCode: 0, FinishedAt: metav1.NewTime(clock.Now()), Message: bad})
	for range 2 {
		st, err = b.Sync(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, builder.PhaseFailed, st.Phase)
		assert.Equal(t, reason.ImageLintFailed, st.Reason)
		assert.True(t, st.Final)
		assert.Contains(t, st.Message, "build "+st.Name+" pushed an image that would not load, so it was not published: "+req.Image+"-kmmkit-unlinted would not load: 1 finding(s) for 6.1.0-56-amd64: /opt/lib/modules/6.1.0-56-amd64: layout: ")
		clock.SetTime(clock.Now().Add(2 * time.Minute))
	}
	require.Len(t, e.pods(t), 1, "kept, past the GC delay, to say why")
	res, err = rc.Verify(ctx, registry.Request{Image: req.Image, TLS: req.RegistryTLS})
	require.NoError(t, err)
	assert.False(t, res.Exists, "not published")
}

// kanikoPush plays the Kaniko Pod's push: an image holding module nic
// for the request's kernel under dirName, at the request's staging tag.
// It returns the pushed digest.
func kanikoPush(t *testing.T, rc *registry.Client, req builder.Request, dirName string) string {
	t.Helper()
	ctx := context.Background()
	kver := req.Kernel.Version
	img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kver, DirName: dirName, Modules: []assemble.File{{Path: "extra/nic.ko",
		Data: elftest.Module{Modinfo: []string{"name=nic", "vermagic=" + kver + " SMP preempt mod_unload modversions "}}.Bytes()}}})
	require.NoError(t, err)
	staging, err := publish.StagingTag(req.Image)
	require.NoError(t, err)
	d, err := rc.Push(ctx, registry.Request{Image: staging, TLS: req.RegistryTLS}, img)
	require.NoError(t, err)
	return d
}

func TestKanikoFakeClientset(t *testing.T) {
	runKaniko(t, env{cs: k8sfake.NewClientset(), ns: "drivers"})
}

func TestKanikoAPIServer(t *testing.T) {
	cs, err := kubernetes.NewForConfig(testenv.RESTConfig(t))
	require.NoError(t, err)
	ns := fmt.Sprintf("kmmkit-kaniko-%d", rand.Uint32())
	ctx := context.Background()
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	runKaniko(t, env{cs: cs, ns: ns, real: true})
}

func TestExecutorImage(t *testing.T) {
	for _, c := range []struct{ image, tag, want string }{
		{"gcr.io/kaniko-project/executor:latest", "debug", "gcr.io/kaniko-project/executor:debug"},
		{"localhost:5000/kaniko:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "v2", "localhost:5000/kaniko:v2"},
		{"kaniko/executor", "v1", "kaniko/executor:v1"},
		{"gcr.io/kaniko-project/executor:latest", "", "gcr.io/kaniko-project/executor:latest"},
	} {
		b, err := kaniko.New(k8sfake.NewClientset(), kaniko.WithImage(c.image))
		require.NoError(t, err)
		req := builder.Request{}
		if c.tag != "" {
			req.KanikoParams = &v1beta1.KanikoParams{Tag: c.tag}
		}
		got, err := b.ExecutorImage(req)
		require.NoError(t, err)
		assert.Equal(t, c.want, got, c.image)
	}
	b, err := kaniko.New(k8sfake.NewClientset())
	require.NoError(t, err)
	_, err = b.ExecutorImage(builder.Request{KanikoParams: &v1beta1.KanikoParams{Tag: "bad tag"}})
	assert.ErrorContains(t, err, `kanikoParams.tag "bad tag"`)
}

// TestKanikoIdentities: KMM's Module nic and two operators' resources
// named nic build for the same kernel in one namespace; each sees,
// replaces and collects only its own build Pod.
func TestKanikoIdentities(t *testing.T) {
	ctx := context.Background()
	cs := k8sfake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "build-token", Namespace: "drivers"}})
	b, err := kaniko.New(cs, kaniko.WithRetryPolicy(builder.RetryPolicy{MaxAttempts: 1}))
	require.NoError(t, err)
	ids := []identity.Domain{{}, {Name: "nic.acme.io", Kind: "NICDriver"}, {Name: "gpu.example.com", Kind: "NICDriver"}}
	reqs := make([]builder.Request, len(ids))
	for i, id := range ids {
		reqs[i] = request(t, "drivers")
		reqs[i].Identity = id
		st, err := b.Sync(ctx, reqs[i])
		require.NoError(t, err)
		assert.Equal(t, reqs[i].Name(1), st.Name)
	}
	pods, err := cs.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pods.Items, 3, "one build Pod per identity")
	byName := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		byName[p.Name] = p
	}
	kmmPod := byName["nic-build-6-1-0-56-amd64"]
	assert.Equal(t, "nic", kmmPod.Labels[builder.LabelModuleName], "KMM's labels for KMM's Module")
	acme := byName[reqs[1].Name(1)]
	assert.Equal(t, map[string]string{
		"nic.acme.io/nicdriver.name": "nic", "nic.acme.io/resource-type": "BuildImage", "nic.acme.io/target-kernel": "6-1-0-56-amd64",
		"app.kubernetes.io/name": "kmmkit", "app.kubernetes.io/component": "BuildImage", "app.kubernetes.io/part-of": "nicdriver",
		builder.LabelAttempt: "1",
	}, acme.Labels, "no KMM key, so KMM never takes it for its own")

	// The acme build fails for good; the others keep running untouched.
	e := env{cs: cs, ns: "drivers"}
	e.setStatus(t, acme.Name, corev1.PodFailed, &corev1.ContainerStateTerminated{ExitCode: 1, Message: "make: error"})
	st, err := b.Sync(ctx, reqs[1])
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseFailed, st.Phase)
	for _, i := range []int{0, 2} {
		st, err := b.Sync(ctx, reqs[i])
		require.NoError(t, err)
		assert.Equal(t, builder.PhasePending, st.Phase, "%s sees its own Pod only", ids[i])
	}
	// A changed request replaces only its own Pod.
	hashes := func() map[string]string {
		pods, err := cs.CoreV1().Pods("drivers").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		out := map[string]string{}
		for _, p := range pods.Items {
			out[p.Name] = p.Annotations[builder.AnnotationHash]
		}
		return out
	}
	before := hashes()
	reqs[2].Dockerfile += "RUN true\n"
	_, err = b.Sync(ctx, reqs[2])
	require.NoError(t, err)
	after := hashes()
	require.Len(t, after, 3)
	assert.Equal(t, before[reqs[0].Name(1)], after[reqs[0].Name(1)])
	assert.Equal(t, before[reqs[1].Name(1)], after[reqs[1].Name(1)])
	assert.Equal(t, reqs[2].Hash(), after[reqs[2].Name(1)], "only gpu.example.com's stale Pod was replaced")
	assert.NotEqual(t, before[reqs[2].Name(1)], after[reqs[2].Name(1)])
}

// TestNewRefusesBadOptions: New names what it cannot use.
func TestNewRefusesBadOptions(t *testing.T) {
	_, err := kaniko.New(nil)
	assert.ErrorContains(t, err, "kaniko: New needs a clientset")
	_, err = kaniko.New(k8sfake.NewClientset(), kaniko.WithImage("not a reference"))
	assert.ErrorContains(t, err, `kaniko: WithImage("not a reference")`)
	_, err = kaniko.New(k8sfake.NewClientset(), kaniko.WithGCDelay(-time.Second))
	assert.ErrorContains(t, err, "kaniko: WithGCDelay(-1s): the delay must not be negative")
}
