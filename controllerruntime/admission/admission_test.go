package admission_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kmmkit/kmmkit/controllerruntime/admission"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/certtest"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/crtest"
	"github.com/kmmkit/kmmkit/controllerruntime/internal/testapi"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func module(name, moduleName string) *v1beta1.Module {
	return &v1beta1.Module{ObjectMeta: metav1.ObjectMeta{Namespace: "drivers", Name: name}, Spec: v1beta1.ModuleSpec{
		Selector: map[string]string{"pool": "a"},
		ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
			Modprobe:       v1beta1.ModprobeSpec{ModuleName: moduleName},
			KernelMappings: []v1beta1.KernelMapping{{Regexp: "^6\\.", ContainerImage: "registry.example.com/nic:${KERNEL_FULL_VERSION}"}},
		}}}}
}

// TestModuleValidator refuses invalid Modules with the API's Invalid
// error naming each field, and never blocks a deletion or an update that
// leaves the spec alone.
func TestModuleValidator(t *testing.T) {
	ctx := context.Background()
	v := admission.ModuleValidator{}
	_, err := v.ValidateCreate(ctx, module("nic", "nic"))
	require.NoError(t, err)

	bad := module("nic", "")
	_, err = v.ValidateCreate(ctx, bad)
	require.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.Contains(t, err.Error(), `Module.kmm.sigs.x-k8s.io "nic" is invalid`)
	assert.Contains(t, err.Error(), "spec.moduleLoader.container.modprobe.rawArgs.load: Required value")

	_, err = v.ValidateUpdate(ctx, module("nic", "nic"), bad)
	require.True(t, apierrors.IsInvalid(err), "an update that breaks the spec: %v", err)
	versioned := module("nic", "nic")
	versioned.Spec.ModuleLoader.Container.Version = "v2"
	_, err = v.ValidateUpdate(ctx, module("nic", "nic"), versioned)
	assert.ErrorContains(t, err, "spec.moduleLoader.container.version: Forbidden", "KMM's update rule")

	relabelled := bad.DeepCopy()
	relabelled.Labels = map[string]string{"team": "net"}
	warnings, err := v.ValidateUpdate(ctx, bad, relabelled)
	require.NoError(t, err, "the spec did not change")
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "rawArgs.load")
	deleting := bad.DeepCopy()
	deleting.DeletionTimestamp = ptr.To(metav1.Now())
	deleting.Spec.Selector = map[string]string{"pool": "b"}
	_, err = v.ValidateUpdate(ctx, bad, deleting)
	require.NoError(t, err, "a deleting Module's finalizer must be removable")
	_, err = v.ValidateDelete(ctx, bad)
	require.NoError(t, err)
	_, err = v.ValidateCreate(ctx, &testapi.Accel{})
	assert.True(t, apierrors.IsBadRequest(err), "%v", err)
}

func accelValidator() admission.SpecValidator[*testapi.Accel] {
	return admission.SpecValidator[*testapi.Accel]{
		Spec: func(a *testapi.Accel) v1beta1.ModuleSpec { return a.Spec.Driver },
		Path: field.NewPath("spec", "driver"),
	}
}

// TestSpecValidatorVersion: an embedded spec gets KMM's update rule for
// the ordered-upgrade version, at its own path.
func TestSpecValidatorVersion(t *testing.T) {
	ctx := context.Background()
	accel := func(version string) *testapi.Accel {
		a := &testapi.Accel{ObjectMeta: metav1.ObjectMeta{Namespace: "drivers", Name: "a"}}
		a.Spec.Driver = module("nic", "nic").Spec
		a.Spec.Driver.ModuleLoader.Container.Version = version
		return a
	}
	v := accelValidator()
	_, err := v.ValidateUpdate(ctx, accel("v1"), accel("v2"))
	require.NoError(t, err)
	_, err = v.ValidateUpdate(ctx, accel(""), accel("v1"))
	require.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.ErrorContains(t, err, `spec.driver.moduleLoader.container.version: Forbidden: cannot change from "" to "v1"`)
	_, err = v.ValidateUpdate(ctx, accel("v1"), accel(""))
	assert.ErrorContains(t, err, `spec.driver.moduleLoader.container.version: Forbidden: cannot change from "v1" to ""`)
}

// TestValidatorsRefuseDRA: the webhook refuses spec.dra as kmmkit's
// Reconciler does (it runs no DRA driver), for Modules and embedded specs.
func TestValidatorsRefuseDRA(t *testing.T) {
	ctx := context.Background()
	withDRA := module("nic", "nic")
	withDRA.Spec.DRA = &v1beta1.DRASpec{DriverName: "gpu.example.com", Container: v1beta1.CommonContainerSpec{Image: "dra:v1"}}
	_, err := admission.ModuleValidator{}.ValidateCreate(ctx, withDRA)
	require.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.ErrorContains(t, err, "spec.dra")
	_, err = admission.ModuleValidator{}.ValidateUpdate(ctx, module("nic", "nic"), withDRA)
	assert.ErrorContains(t, err, "spec.dra")

	a := &testapi.Accel{ObjectMeta: metav1.ObjectMeta{Namespace: "drivers", Name: "a"}}
	a.Spec.Driver = withDRA.Spec
	_, err = accelValidator().ValidateCreate(ctx, a)
	require.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.ErrorContains(t, err, "spec.driver.dra")
}

// freePort returns a port on 127.0.0.1 nobody listens on now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestWebhooks serves the validators with controller-runtime's webhook
// server over HTTPS on 127.0.0.1, asks it directly, then registers it in
// the test kube-apiserver (by URL, for the test's namespace only) so that
// the API server itself refuses an invalid Module and an Accel with an
// invalid embedded spec, with messages naming the fields.
func TestWebhooks(t *testing.T) {
	env := crtest.New(t)
	ctx := crtest.Context(t)
	require.NoError(t, testapi.AddToScheme(env.Scheme))
	env.InstallCRDs(t, testapi.CRDs)
	ns := env.Namespace(t, "hook")

	dir := t.TempDir()
	caPEM := certtest.Write(t, dir)
	port := freePort(t)
	opts := env.Options(t, ns)
	opts.WebhookServer = webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir})
	mgr, err := ctrl.NewManager(env.Config, opts)
	require.NoError(t, err)
	require.NoError(t, admission.SetupModuleWebhook(mgr))
	require.NoError(t, admission.SetupSpecWebhook(mgr, &testapi.Accel{}, accelValidator()))
	crtest.Start(t, mgr)
	base := "https://127.0.0.1:" + strconv.Itoa(port)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	crtest.Eventually(t, "the webhook server never answered", func(context.Context) (bool, error) {
		_, err := hc.Get(base + "/healthz")
		return err == nil, nil
	})

	// Directly: an AdmissionReview for an invalid Module.
	raw, err := json.Marshal(module("nic", ""))
	require.NoError(t, err)
	review := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: types.UID("r1"), Operation: admissionv1.Create, Namespace: "drivers", Name: "nic",
			Kind:   metav1.GroupVersionKind{Group: v1beta1.GroupName, Version: v1beta1.Version, Kind: v1beta1.Kind},
			Object: runtime.RawExtension{Raw: raw}}}
	body, err := json.Marshal(review)
	require.NoError(t, err)
	resp, err := hc.Post(base+admission.ModulePath, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var answer admissionv1.AdmissionReview
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
	require.NotNil(t, answer.Response)
	assert.Equal(t, types.UID("r1"), answer.Response.UID)
	assert.False(t, answer.Response.Allowed)
	assert.Equal(t, int32(http.StatusUnprocessableEntity), answer.Response.Result.Code)
	assert.Contains(t, answer.Response.Result.Message, "spec.moduleLoader.container.modprobe.rawArgs.load")

	// Through the API server.
	_, err = env.Clientset.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"kmmkit.io/webhook-test":"`+env.Run+`"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	rule := func(group, version, resource string) admissionregistrationv1.RuleWithOperations {
		return admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
			Rule: admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{version}, Resources: []string{resource},
				Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}
	}
	hook := func(name, path string, r admissionregistrationv1.RuleWithOperations) admissionregistrationv1.ValidatingWebhook {
		return admissionregistrationv1.ValidatingWebhook{Name: name,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(base + path), CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{r},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kmmkit.io/webhook-test": env.Run}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"}}
	}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "kmmkit-test-" + env.Run},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			hook("vmodule.kmm.sigs.x-k8s.io", admission.ModulePath, rule(v1beta1.GroupName, v1beta1.Version, "modules")),
			hook("vaccel.test.kmmkit.io", "/validate-test-kmmkit-io-v1-accel", rule(testapi.GroupVersion.Group, testapi.GroupVersion.Version, "accels")),
		}}
	require.NoError(t, env.Client.Create(ctx, vwc))
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), vwc) })

	// The API server picks a new configuration up within a moment:
	// until the invalid Module is refused, delete what got through.
	var refused error
	crtest.Eventually(t, "the API server never refused the invalid Module", func(ctx context.Context) (bool, error) {
		m := module("nic", "")
		m.Namespace = ns
		refused = env.Client.Create(ctx, m)
		if refused == nil {
			return false, env.Client.Delete(ctx, m)
		}
		return true, nil
	})
	require.True(t, apierrors.IsInvalid(refused), "%v", refused)
	assert.Contains(t, refused.Error(), `admission webhook "vmodule.kmm.sigs.x-k8s.io" denied the request`)
	assert.Contains(t, refused.Error(), "spec.moduleLoader.container.modprobe.rawArgs.load: Required value")
	good := module("nic", "nic")
	good.Namespace = ns
	require.NoError(t, env.Client.Create(ctx, good), "a valid Module")

	accel := &testapi.Accel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a"},
		Spec: testapi.AccelSpec{Driver: module("", "accel").Spec}}
	require.NoError(t, env.Client.Create(ctx, accel), "a valid Accel")
	accel.Spec.Driver.Selector = map[string]string{"not a label": "x"}
	err = env.Client.Update(ctx, accel)
	require.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.Contains(t, err.Error(), `Accel.test.kmmkit.io "a" is invalid`)
	assert.Contains(t, err.Error(), "spec.driver.selector")
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(accel), accel))
	assert.Equal(t, map[string]string{"pool": "a"}, accel.Spec.Driver.Selector, "the refused update was not stored")
}
