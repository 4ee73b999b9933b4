package kmm

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kmmkit/kmmkit/upgrade"
)

func TestRollVersionLabel(t *testing.T) {
	loaded := upgrade.Node{Name: "n1", Target: "t2", Loaded: true}
	empty := upgrade.Node{Name: "n1", Target: "t2"}
	cases := []struct {
		name    string
		f       upgrade.Node
		s       upgrade.State
		m       string
		version string
		want    string
		why     bool
	}{
		{"outdated and waiting: M stays", loaded, upgrade.Required, "v1", "v2", "", false},
		{"admitted, before the load step: M stays", loaded, upgrade.StopDevicePlugin, "v1", "v2", "", false},
		{"the load step: M is the version", loaded, upgrade.Load, "v1", "v2", "v2", true},
		{"validation: M is put back", loaded, upgrade.Validate, "v3", "v2", "v2", true},
		{"uncordon: M set if missing", loaded, upgrade.Uncordon, "", "v2", "v2", true},
		{"the load step, M already there: no write", loaded, upgrade.Load, "v2", "v2", "", false},
		{"skipped: the administrator's", upgrade.Node{Name: "n1", Target: "t2", Loaded: true, Skip: true}, upgrade.Load, "v1", "v2", "", false},
		{"skipped new node: the administrator's", upgrade.Node{Name: "n1", Target: "t2", Skip: true}, upgrade.None, "", "v2", "", false},
		{"nothing desired yet", upgrade.Node{Name: "n1", Loaded: true}, upgrade.Load, "v1", "v2", "", false},
		{"new node: at once", empty, upgrade.None, "", "v2", "v2", true},
		{"nothing loaded any more, done: at once", empty, upgrade.Done, "", "v2", "v2", true},
		{"nothing loaded, a user's M: kept", empty, upgrade.None, "v1", "v2", "", false},
		{"nothing loaded, in an upgrade before the load step: M stays", empty, upgrade.Evict, "", "v2", "", false},
		{"loaded, M removed, not in an upgrade: M stays until the load step", loaded, upgrade.Required, "", "v2", "", false},
		{"no version", empty, upgrade.Load, "", "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, why := rollVersionLabel(c.f, c.s, c.m, c.version)
			assert.Equal(t, c.want, m)
			assert.Equal(t, c.why, why != "", why)
		})
	}
}
