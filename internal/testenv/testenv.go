// Package testenv gives tests access to the real components that
// `make test` installs and starts (hack/test.sh), and decides what a test
// does when one is missing.
//
// On a bare machine, `go test ./...` stays fast and green: a test that needs
// a component skips with a message naming it and how to get it. Under
// `make test` and CI, KMMKIT_INTEGRATION=1 is set, and a missing component
// fails the test instead, so a broken install step can never pass as a
// skip.
//
// The components are described by environment variables that
// hack/lib/services.sh exports:
//
//	KMMKIT_INTEGRATION=1   integration mode: missing dependencies fail
//	KMMKIT_KUBECONFIG      kubeconfig of a kube-apiserver (with etcd) on 127.0.0.1
//	KMMKIT_REGISTRY*       docker-registry servers, plain and TLS with htpasswd (see Registry)
//	KMMKIT_KERNEL_TREE     an unpacked Debian linux-image package (see KernelTree)
package testenv

import (
	"os"
	"os/exec"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// IntegrationEnv is the variable that turns missing dependencies into
// failures.
const IntegrationEnv = "KMMKIT_INTEGRATION"

// KubeconfigEnv names the kubeconfig of the test kube-apiserver.
const KubeconfigEnv = "KMMKIT_KUBECONFIG"

// Integration reports whether tests run in integration mode, where every
// dependency must be present.
func Integration() bool { return os.Getenv(IntegrationEnv) == "1" }

// TB is the part of testing.TB that Need uses.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Need stops the test when a dependency is missing: it fails in integration
// mode and skips otherwise. what names the dependency, and hint says how to
// get it.
func Need(t TB, what string, present bool, hint string) {
	t.Helper()
	if present {
		return
	}
	if Integration() {
		t.Fatalf("%s is missing, and %s=1 requires it: %s", what, IntegrationEnv, hint)
		return
	}
	t.Skipf("skipping: needs %s (%s); `make test` provides it", what, hint)
}

// LookPath returns the path of an executable, or stops the test as Need
// does when it is not installed.
func LookPath(t TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, name, err == nil, hint)
	return p
}

// RESTConfig returns a client configuration for the test kube-apiserver, or
// stops the test as Need does when none runs.
func RESTConfig(t testing.TB) *rest.Config {
	t.Helper()
	path := os.Getenv(KubeconfigEnv)
	Need(t, "a kube-apiserver", path != "", KubeconfigEnv+" is not set; hack/test.sh starts etcd and kube-apiserver and sets it")
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("reading %s=%s: %v", KubeconfigEnv, path, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	return cfg
}
