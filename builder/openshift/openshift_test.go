package openshift_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	buildv1 "github.com/openshift/api/build/v1"
	buildclient "github.com/openshift/client-go/build/clientset/versioned"
	buildfake "github.com/openshift/client-go/build/clientset/versioned/fake"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/builder/openshift"
	"github.com/kmmkit/kmmkit/builder/publish"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

type dtk map[string]string

func (d dtk) DTKImage(_ context.Context, kernel string) (string, error) {
	if img, ok := d[kernel]; ok {
		return img, nil
	}
	return "", errors.New("could not find the OS image of this kernel in the DTK mapping")
}

func request(t *testing.T, ns string) builder.Request {
	k, err := kernelmap.ParseKernel("5.14.0-570.92.1.el9_6.x86_64")
	require.NoError(t, err)
	req := builder.Request{
		Namespace: ns, Module: "nic", Kernel: k, Image: "image-registry.openshift-image-registry.svc:5000/drivers/nic:5.14.0-570.92.1.el9_6.x86_64",
		Dockerfile: "ARG DTK_AUTO\nFROM ${DTK_AUTO} as builder\nRUN make\nFROM registry.redhat.io/ubi9/ubi-minimal\n",
		BuildArgs:  []v1beta1.BuildArg{{Name: "MOD_NAME", Value: "user-value"}},
		Secrets:    []corev1.LocalObjectReference{{Name: "entitlement"}},
		PullSecret: &corev1.LocalObjectReference{Name: "push"},
	}
	require.NoError(t, req.ResolveDTK(context.Background(), dtk{k.Version: "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:0123"}))
	return req
}

func setPhase(t *testing.T, c buildclient.Interface, ns, name string, mutate func(*buildv1.BuildStatus)) {
	ctx := context.Background()
	b, err := c.BuildV1().Builds(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	mutate(&b.Status)
	_, err = c.BuildV1().Builds(ns).Update(ctx, b, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func builds(t *testing.T, c buildclient.Interface, ns string) []buildv1.Build {
	l, err := c.BuildV1().Builds(ns).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return l.Items
}

func runOpenShift(t *testing.T, c buildclient.Interface, ns string) {
	ctx := context.Background()
	clock := clocktesting.NewFakePassiveClock(time.Now().Truncate(time.Second))
	b, err := openshift.New(c, openshift.WithGCDelay(30*time.Second), openshift.WithRetryPolicy(builder.RetryPolicy{MaxAttempts: 2, Backoff: time.Minute}),
		openshift.WithClock(clock))
	require.NoError(t, err)
	req := request(t, ns)

	st, err := b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhasePending, st.Phase)
	_, err = b.Sync(ctx, req)
	require.NoError(t, err)
	list := builds(t, c, ns)
	require.Len(t, list, 1, "no duplicate")
	bld := list[0]
	assert.Equal(t, "nic-build-5-14-0-570-92-1-el9-6-x86-64", bld.Name)
	assert.Equal(t, "BuildImage", bld.Labels[openshift.LabelBuildType])
	assert.Equal(t, "builder", bld.Spec.ServiceAccount)
	assert.Equal(t, req.Dockerfile, *bld.Spec.Source.Dockerfile)
	assert.Equal(t, buildv1.BuildSourceDockerfile, bld.Spec.Source.Type)
	ds := bld.Spec.Strategy.DockerStrategy
	require.NotNil(t, ds)
	env := map[string]string{}
	for _, e := range ds.BuildArgs {
		env[e.Name] = e.Value
	}
	assert.Equal(t, "nic", env["MOD_NAME"], "injected args override the user's")
	assert.Equal(t, "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:0123", env["DTK_AUTO"])
	assert.Equal(t, "5.14.0", env["KERNEL_XYZ"])
	assert.Equal(t, "push", ds.PullSecret.Name)
	assert.Equal(t, "push", bld.Spec.Output.PushSecret.Name)
	assert.Equal(t, "DockerImage", bld.Spec.Output.To.Kind)
	assert.Equal(t, req.Image, bld.Spec.Output.To.Name)
	require.Len(t, ds.Volumes, 1)
	assert.Equal(t, "/run/secrets/entitlement", ds.Volumes[0].Mounts[0].DestinationPath)
	assert.True(t, *bld.Spec.MountTrustedCA)

	setPhase(t, c, ns, bld.Name, func(s *buildv1.BuildStatus) { s.Phase = buildv1.BuildPhaseRunning })
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseRunning, st.Phase)

	// A changed Dockerfile replaces it.
	req.Dockerfile += "RUN true\n"
	_, err = b.Sync(ctx, req)
	require.NoError(t, err)
	list = builds(t, c, ns)
	require.Len(t, list, 1)
	assert.Equal(t, req.Dockerfile, *list[0].Spec.Source.Dockerfile)

	// Failure: log snippet, one retry after the backoff, then final.
	fail := func(s *buildv1.BuildStatus) {
		s.Phase, s.Reason, s.Message = buildv1.BuildPhaseFailed, "DockerBuildFailed", "Docker build strategy has failed."
		s.LogSnippet = "make: *** [Makefile:5: modules] Error 2"
		s.CompletionTimestamp = &metav1.Time{Time: clock.Now()}
	}
	setPhase(t, c, ns, req.Name(1), fail)
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseFailed, st.Phase)
	assert.Equal(t, reason.BuildFailed, st.Reason)
	assert.Contains(t, st.Message, "DockerBuildFailed")
	assert.Equal(t, "make: *** [Makefile:5: modules] Error 2", st.LogTail)
	assert.Equal(t, time.Minute, st.RequeueAfter)
	clock.SetTime(clock.Now().Add(time.Minute))
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, 2, st.Attempt)
	setPhase(t, c, ns, req.Name(2), fail)
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.True(t, st.Final)
	assert.Len(t, builds(t, c, ns), 2, "failures are kept")

	// Success after a fix: digest, then collection after the delay.
	req.BuildArgs = append(req.BuildArgs, v1beta1.BuildArg{Name: "FIX", Value: "1"})
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	require.Len(t, builds(t, c, ns), 1, "stale failures go when the request changes")
	setPhase(t, c, ns, st.Name, func(s *buildv1.BuildStatus) {
		s.Phase = buildv1.BuildPhaseComplete
		s.CompletionTimestamp = &metav1.Time{Time: clock.Now()}
		s.Output.To = &buildv1.BuildStatusOutputTo{ImageDigest: "sha256:feed"}
	})
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
	assert.Equal(t, "sha256:feed", st.Digest)
	assert.Equal(t, 30*time.Second, st.RequeueAfter)
	clock.SetTime(clock.Now().Add(31 * time.Second))
	_, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Empty(t, builds(t, c, ns))
}

func TestOpenShiftFakeClientset(t *testing.T) {
	runOpenShift(t, buildfake.NewSimpleClientset(), "drivers")
}

// TestOpenShiftAPIServer runs against the real kube-apiserver with a
// stand-in CRD for build.openshift.io/v1 Build.
func TestOpenShiftAPIServer(t *testing.T) {
	cfg := testenv.RESTConfig(t)
	manifest, err := os.ReadFile("testdata/builds.build.openshift.io.yaml")
	require.NoError(t, err)
	testenv.InstallCRD(t, cfg, manifest)
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	ns := fmt.Sprintf("kmmkit-osbuild-%d", rand.Uint32())
	_, err = cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	c, err := buildclient.NewForConfig(cfg)
	require.NoError(t, err)
	runOpenShift(t, c, ns)
}

func TestResolveDTKError(t *testing.T) {
	req := request(t, "ns")
	req.DTKImage = ""
	err := req.ResolveDTK(context.Background(), dtk{})
	assert.ErrorContains(t, err, "kernel 5.14.0-570.92.1.el9_6.x86_64")
	assert.ErrorContains(t, err, "DTK mapping")
	req.Dockerfile = "FROM scratch\n"
	assert.NoError(t, req.ResolveDTK(context.Background(), dtk{}), "no DTK_AUTO in the Dockerfile: nothing to resolve")
}

func TestOpenShiftSecretVersions(t *testing.T) {
	ctx := context.Background()
	secrets := k8sfake.NewClientset()
	c := buildfake.NewSimpleClientset()
	b, err := openshift.New(c, openshift.WithSecrets(secrets))
	require.NoError(t, err)
	req := request(t, "drivers")
	_, err = b.Sync(ctx, req)
	assert.ErrorContains(t, err, "build secret drivers/entitlement")
	_, err = secrets.CoreV1().Secrets("drivers").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "entitlement", ResourceVersion: "7"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = b.Sync(ctx, req)
	require.NoError(t, err)
	first := builds(t, c, "drivers")[0].Annotations[builder.AnnotationHash]
	sec, err := secrets.CoreV1().Secrets("drivers").Get(ctx, "entitlement", metav1.GetOptions{})
	require.NoError(t, err)
	sec.ResourceVersion = "8"
	_, err = secrets.CoreV1().Secrets("drivers").Update(ctx, sec, metav1.UpdateOptions{})
	require.NoError(t, err)
	_, err = b.Sync(ctx, req)
	require.NoError(t, err)
	list := builds(t, c, "drivers")
	require.Len(t, list, 1)
	assert.NotEqual(t, first, list[0].Annotations[builder.AnnotationHash], "a changed secret replaces the build")
}

// TestOpenShiftIdentity: another identity's Build carries its own labels
// and none of KMM's, and the two are found apart.
func TestOpenShiftIdentity(t *testing.T) {
	ctx := context.Background()
	c := buildfake.NewSimpleClientset()
	b, err := openshift.New(c)
	require.NoError(t, err)
	kmmReq, acmeReq := request(t, "drivers"), request(t, "drivers")
	acmeReq.Identity = identity.Domain{Name: "nic.acme.io", Kind: "NICDriver"}
	for _, r := range []builder.Request{kmmReq, acmeReq} {
		_, err := b.Sync(ctx, r)
		require.NoError(t, err)
	}
	all := builds(t, c, "drivers")
	require.Len(t, all, 2)
	got := map[string]map[string]string{}
	for _, bl := range all {
		got[bl.Name] = bl.Labels
	}
	assert.Equal(t, builder.ResourceBuild, got[kmmReq.Name(1)][openshift.LabelBuildType])
	acme := got[acmeReq.Name(1)]
	require.NotNil(t, acme, "names differ: %v", got)
	assert.Equal(t, "nic", acme["nic.acme.io/nicdriver.name"])
	for k := range acme {
		assert.False(t, strings.HasPrefix(k, "kmm."), "KMM key %s on another identity's Build", k)
	}
	setPhase(t, c, "drivers", acmeReq.Name(1), func(s *buildv1.BuildStatus) { s.Phase = buildv1.BuildPhaseComplete })
	st, err := b.Sync(ctx, kmmReq)
	require.NoError(t, err)
	assert.NotEqual(t, builder.PhaseSucceeded, st.Phase, "KMM's build does not see the other's completion")
	st, err = b.Sync(ctx, acmeReq)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
}

// TestNewRefusesBadOptions: New names what it cannot use.
func TestNewRefusesBadOptions(t *testing.T) {
	_, err := openshift.New(nil)
	assert.ErrorContains(t, err, "openshift: New needs a build.openshift.io clientset")
	_, err = openshift.New(buildfake.NewSimpleClientset(), openshift.WithServiceAccount(""))
	assert.ErrorContains(t, err, `openshift: WithServiceAccount("")`)
	_, err = openshift.New(buildfake.NewSimpleClientset(), openshift.WithGCDelay(-time.Minute))
	assert.ErrorContains(t, err, "openshift: WithGCDelay(-1m0s): the delay must not be negative")
}

// TestOpenShiftPublish: WithPublish makes the Build push to the staging
// tag; a completed Build's image is linted and tagged at the request's
// image, and one that would not load fails with ImageLintFailed, finally,
// unpublished. The image pushes of the Builds are played on an
// in-process registry.
func TestOpenShiftPublish(t *testing.T) {
	ctx := context.Background()
	reg := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	rc, err := registry.NewClient()
	require.NoError(t, err)
	c := buildfake.NewSimpleClientset()
	secrets := k8sfake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "push", Namespace: "drivers"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}})
	b, err := openshift.New(c, openshift.WithSecrets(secrets), openshift.WithPublish(rc), openshift.WithRetryPolicy(builder.RetryPolicy{MaxAttempts: 1}))
	require.NoError(t, err)
	req := request(t, "drivers")
	req.Secrets = nil
	req.Image, req.RegistryTLS, req.Modules = host+"/drivers/nic:"+req.Kernel.Version, v1beta1.TLSOptions{Insecure: true}, []string{"nic"}

	// played is what the Build pushed: module nic under dirName, at the
	// staging tag; the Build completes with its digest.
	played := func(st builder.Status, dirName string) {
		t.Helper()
		kver := req.Kernel.Version
		img, err := assemble.Assemble(ctx, assemble.Input{KernelVersion: kver, DirName: dirName, Modules: []assemble.File{{Path: "extra/nic.ko",
			Data: elftest.Module{Modinfo: []string{"name=nic", "vermagic=" + kver + " SMP preempt mod_unload modversions "}}.Bytes()}}})
		require.NoError(t, err)
		staging, err := publish.StagingTag(req.Image)
		require.NoError(t, err)
		d, err := rc.Push(ctx, registry.Request{Image: staging, TLS: req.RegistryTLS}, img)
		require.NoError(t, err)
		setPhase(t, c, "drivers", st.Name, func(s *buildv1.BuildStatus) {
			s.Phase, s.CompletionTimestamp = buildv1.BuildPhaseComplete, &metav1.Time{Time: time.Now()}
			s.Output.To = &buildv1.BuildStatusOutputTo{ImageDigest: d}
		})
	}

	st, err := b.Sync(ctx, req)
	require.NoError(t, err)
	list := builds(t, c, "drivers")
	require.Len(t, list, 1)
	assert.Equal(t, req.Image+"-kmmkit-unlinted", list[0].Spec.Output.To.Name, "the Build pushes to the staging tag")
	played(st, "/opt")
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase, st.Message)
	res, err := rc.Verify(ctx, registry.Request{Image: req.Image, TLS: req.RegistryTLS})
	require.NoError(t, err)
	assert.True(t, res.Exists, "published")
	assert.Equal(t, st.Digest, res.Digest)

	req.Image = host + "/drivers/misplaced:" + req.Kernel.Version
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	played(st, "/")
	st, err = b.Sync(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseFailed, st.Phase)
	assert.Equal(t, reason.ImageLintFailed, st.Reason)
	assert.True(t, st.Final)
	assert.Contains(t, st.Message, req.Image+"-kmmkit-unlinted would not load: 1 finding(s) for "+req.Kernel.Version+": /opt/lib/modules/"+req.Kernel.Version+": layout: ")
	res, err = rc.Verify(ctx, registry.Request{Image: req.Image, TLS: req.RegistryTLS})
	require.NoError(t, err)
	assert.False(t, res.Exists, "not published")
}
