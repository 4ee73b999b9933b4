package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// recorder is a TB that records what Need did.
type recorder struct {
	skipped, failed string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skipf(format string, args ...any)  { r.skipped = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestNeedSkipsOnABareMachine(t *testing.T) {
	t.Setenv(IntegrationEnv, "")
	r := &recorder{}
	Need(r, "buildah", false, "apt-get install buildah")
	assert.Contains(t, r.skipped, "needs buildah (apt-get install buildah)")
	assert.Empty(t, r.failed)
}

func TestNeedFailsInIntegrationMode(t *testing.T) {
	t.Setenv(IntegrationEnv, "1")
	r := &recorder{}
	Need(r, "buildah", false, "apt-get install buildah")
	assert.Contains(t, r.failed, "buildah is missing, and KMMKIT_INTEGRATION=1 requires it")
	assert.Empty(t, r.skipped)
}

func TestNeedPresentDoesNothing(t *testing.T) {
	for _, mode := range []string{"", "1"} {
		t.Setenv(IntegrationEnv, mode)
		r := &recorder{}
		Need(r, "go", true, "")
		assert.Equal(t, &recorder{}, r)
	}
}

func TestLookPath(t *testing.T) {
	t.Setenv(IntegrationEnv, "1")
	r := &recorder{}
	assert.NotEmpty(t, LookPath(r, "sh", ""))
	assert.Empty(t, r.failed)
	LookPath(r, "kmmkit-no-such-tool", "nowhere")
	assert.Contains(t, r.failed, "kmmkit-no-such-tool is missing")
}

// TestKubeAPIServer checks the server hack/test.sh starts: reachable,
// loopback-only, and authenticated.
func TestKubeAPIServer(t *testing.T) {
	cfg := RESTConfig(t)
	assert.Regexp(t, `^https://127\.0\.0\.1:\d+$`, cfg.Host)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	assert.Equal(t, "1", v.Major)
	_, err = cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
	assert.NoError(t, err)
}
