package kmm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/identity"
)

// TestKMMVersionActionTable: the cases of KMM's
// internal/controllers/node_label_module_version_reconciler_test.go,
// Describe("getLabelAndAction"), entry for entry (M, W, S values and the
// expected label and action).
func TestKMMVersionActionTable(t *testing.T) {
	for _, tc := range []struct {
		entry   string
		m, w, s string
		want    versionStep
	}{
		{"all labels present with the same label", "1", "1", "1", stepNone},
		{"module version missing, worker pod present, schedule pod present", "", "1", "1", stepDeleteSchedule},
		{"module version missing, worker pod present, schedule pod missing", "", "1", "", stepDeleteWorker},
		{"all labels missing", "", "", "", stepNone},
		{"module version present, worker pod missing, schedule pod missing", "1", "", "", stepAddWorker},
		{"module version present, worker pod present, schedule pod missing", "1", "1", "", stepAddSchedule},
		{"module version present, worker pod different, schedule pod different", "2", "1", "1", stepDeleteSchedule},
		{"module version present, worker pod different, schedule pod missing", "2", "1", "", stepDeleteWorker},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			step, inTable := kmmVersionAction(tc.m, tc.w, tc.s)
			assert.True(t, inTable)
			assert.Equal(t, tc.want, step)
			ours, extra := versionAction(tc.m, tc.w, tc.s)
			assert.False(t, extra, "a row of KMM's table is KMM's")
			assert.Equal(t, tc.want, ours)
		})
	}
}

// TestVersionActionOutsideKMMTable: the five states KMM's table leaves
// out (KMM does nothing there, and stays stuck); kmmkit removes S, which
// lands each on a row of the table (README, "Deliberate differences").
func TestVersionActionOutsideKMMTable(t *testing.T) {
	for _, tc := range []struct {
		m, w, s string
		state   versionState
		next    versionState // after removing S
	}{
		{"", "", "1", versionState{labelMissing, labelMissing, labelPresent}, versionState{labelMissing, labelMissing, labelMissing}},
		{"2", "", "2", versionState{labelPresent, labelMissing, labelPresent}, versionState{labelPresent, labelMissing, labelMissing}},
		{"2", "", "1", versionState{labelPresent, labelMissing, labelDifferent}, versionState{labelPresent, labelMissing, labelMissing}},
		{"2", "2", "1", versionState{labelPresent, labelPresent, labelDifferent}, versionState{labelPresent, labelPresent, labelMissing}},
		{"2", "1", "2", versionState{labelPresent, labelDifferent, labelPresent}, versionState{labelPresent, labelDifferent, labelMissing}},
	} {
		t.Run(tc.state.String(), func(t *testing.T) {
			assert.Equal(t, tc.state, stateOf(tc.m, tc.w, tc.s))
			step, inTable := kmmVersionAction(tc.m, tc.w, tc.s)
			assert.False(t, inTable, "KMM has no row")
			assert.Equal(t, stepNone, step, "KMM does nothing")
			ours, extra := versionAction(tc.m, tc.w, tc.s)
			assert.True(t, extra)
			assert.Equal(t, stepDeleteSchedule, ours)
			assert.Equal(t, tc.next, stateOf(tc.m, tc.w, ""))
			_, ok := kmmVersionTable[tc.next]
			assert.True(t, ok, "the next state is a row of KMM's table")
		})
	}
	// 13 states are reachable (with M missing, W and S are only present
	// or missing): KMM's 8 rows and these 5.
	states := map[versionState]bool{}
	for _, m := range []string{"", "2"} {
		for _, w := range []string{"", "1", "2"} {
			for _, s := range []string{"", "1", "2"} {
				states[stateOf(m, w, s)] = true
			}
		}
	}
	outside := 0
	for st := range states {
		if _, ok := kmmVersionTable[st]; !ok {
			outside++
		}
	}
	assert.Len(t, states, 13)
	assert.Equal(t, 5, outside)
}

// TestKMMVersionGuards: the cases of KMM's
// internal/controllers/node_label_module_version_reconciler_test.go,
// Describe("reconcileLabels"), one by one: the guards G1 (a device-plugin
// Pod of the Module on the node holds the removal of W) and G2 (the ready
// label holds the addition of W); S is never guarded.
func TestKMMVersionGuards(t *testing.T) {
	o := identity.Domain{}.Owner("moduleNamespace", "moduleName")
	loaded := map[string]string{o.ReadyLabel(): ""}
	for _, tc := range []struct {
		it          string
		m, w, s     string
		pluginPod   bool
		ready       bool
		wantStep    versionStep
		wantWait    versionGuard
		askedForPod bool
	}{
		{"delete schedule pod label, schedule pod not present", "", "1", "1", false, false, stepDeleteSchedule, guardNone, false},
		{"delete worker pod label, schedule pod not present", "", "1", "", false, false, stepDeleteWorker, guardNone, true},
		{"delete schedule pod label, schedule pod present", "", "1", "1", true, false, stepDeleteSchedule, guardNone, false},
		{"delete worker pod label, schedule pod present", "", "1", "", true, false, stepDeleteWorker, guardDevicePlugin, true},
		{"add worker pod label, kernel module is not loaded", "1", "", "", false, false, stepAddWorker, guardNone, false},
		{"add worker pod label, kernel module is loaded", "1", "", "", false, true, stepAddWorker, guardLoaded, false},
		{"add schedule pod label, kernel module is not loaded", "1", "1", "", false, false, stepAddSchedule, guardNone, false},
		{"add schedule pod label, kernel module is loaded", "1", "1", "", false, true, stepAddSchedule, guardNone, false},
		{"no label needs to be added due to none action", "1", "1", "1", true, false, stepNone, guardNone, false},
	} {
		t.Run(tc.it, func(t *testing.T) {
			step, _ := versionAction(tc.m, tc.w, tc.s)
			assert.Equal(t, tc.wantStep, step)
			n := &corev1.Node{}
			if tc.ready {
				n.Labels = loaded
			}
			asked := false
			g := guarded(step, o, n, func() bool { asked = true; return tc.pluginPod })
			assert.Equal(t, tc.wantWait, g)
			assert.Equal(t, tc.askedForPod, asked, "the Pods are looked up only before deleting W")
		})
	}
	// kmmkit's loader drops .ready when an unload starts: its record of
	// what is loaded holds W too.
	recorded := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{o.ObservedAnnotation(): "{}"}}}
	assert.Equal(t, guardLoaded, guarded(stepAddWorker, o, recorded, func() bool { return false }))
	assert.Equal(t, guardNone, guarded(stepAddSchedule, o, recorded, func() bool { return false }))
}

// TestKMMPrepareNodeSchedulingData: the version cases of KMM's
// internal/controllers/module_reconciler_test.go,
// Describe("prepareSchedulingData"): what the loader does with W.
func TestKMMPrepareNodeSchedulingData(t *testing.T) {
	// It("module version exists, workerPod version label exists, versions are equal"): actionAdd.
	assert.Equal(t, loadCurrent, versionLoad("moduleVersion1", "moduleVersion1"))
	// It("module version exists, workerPod version label exists, versions are different"): no change.
	assert.Equal(t, loadKeep, versionLoad("moduleVersion1", "moduleVersion2"))
	// It("module version exists, moduleLoader version label does not exist"): actionDelete.
	assert.Equal(t, loadNotDesired, versionLoad("", "moduleVersion2"))
	// It("mld exists") and the others without a version ignore W: the
	// Reconciler then makes no versionPass at all (reconcile.go).
}
