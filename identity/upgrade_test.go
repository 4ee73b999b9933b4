package identity_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kmmkit/kmmkit/identity"
)

func TestUpgradeKeys(t *testing.T) {
	o := kmm.Owner("drivers", "nic")
	assert.Equal(t, "upgrade.kmmkit.io/drivers.nic.state", o.UpgradeStateLabel())
	assert.Equal(t, "upgrade.kmmkit.io/drivers.nic.skip", o.UpgradeSkipLabel())
	assert.Equal(t, "upgrade.kmmkit.io/drivers.nic", o.UpgradeAnnotation())
	e := acme.Owner("drivers", "nic")
	assert.Equal(t, "nic.acme.io/nicdriver.drivers.nic.upgrade-state", e.UpgradeStateLabel())
	assert.Equal(t, "nic.acme.io/nicdriver.drivers.nic.upgrade-skip", e.UpgradeSkipLabel())
	assert.Equal(t, "nic.acme.io/nicdriver.drivers.nic.upgrade", e.UpgradeAnnotation())
	assert.Equal(t, "nic.acme.io/nicdriver.nic.upgrade-state", acme.Owner("", "nic").UpgradeStateLabel())
}

// TestUpgradeKeysStayValid: long owners get valid, distinct keys.
func TestUpgradeKeysStayValid(t *testing.T) {
	long := strings.Repeat("a", 253)
	seen := map[string]identity.Owner{}
	for _, o := range []identity.Owner{
		kmm.Owner(strings.Repeat("n", 63), strings.Repeat("m", 60)),
		kmm.Owner(strings.Repeat("n", 63), strings.Repeat("m", 61)),
		kmm.Owner("ns", long),
		acme.Owner(strings.Repeat("n", 63), long),
		acme.Owner("", long),
	} {
		for _, k := range []string{o.UpgradeStateLabel(), o.UpgradeSkipLabel(), o.UpgradeAnnotation()} {
			assert.Empty(t, validation.IsQualifiedName(k), k)
			if other, dup := seen[k]; dup {
				t.Errorf("%s of %s is also %s's", k, o, other)
			}
			seen[k] = o
		}
	}
}
