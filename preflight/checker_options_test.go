package preflight_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kmmkit/kmmkit/preflight"
	"github.com/kmmkit/kmmkit/registry"
)

// TestNewNamesTheBadOption: New refuses a non-positive build timeout or
// poll interval, naming the option as every constructor does.
func TestNewNamesTheBadOption(t *testing.T) {
	reg, err := registry.NewClient()
	assert.NoError(t, err)
	_, err = preflight.New(fake.NewClientset(), reg, preflight.WithBuildTimeout(0))
	assert.EqualError(t, err, "preflight: WithBuildTimeout(0s): the timeout must be positive")
	_, err = preflight.New(fake.NewClientset(), reg, preflight.WithPollInterval(-time.Second))
	assert.EqualError(t, err, "preflight: WithPollInterval(-1s): the interval must be positive")
	c, err := preflight.New(fake.NewClientset(), reg, preflight.WithBuildTimeout(time.Minute))
	assert.NoError(t, err)
	assert.NotNil(t, c)
}
