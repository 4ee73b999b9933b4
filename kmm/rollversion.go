package kmm

import "github.com/kmmkit/kmmkit/upgrade"

// A rolling upgrade (WithRollingUpgrade) of an owner with a version
// (spec.moduleLoader.container.version) plays the administrator of KMM's
// ordered upgrade on the nodes it manages (targeted, without the skip
// label): it sets their version-module label, M, and KMM's own W and S
// steps (versionlabels.go) then unload the old version and load the new
// one. The rollout paces the nodes by when it writes M: a node that has
// the module at another version gets M when its upgrade reaches the load
// step, after its cordon, waits, evictions and device-plugin stop. Until
// then it keeps what it has, even if someone else changed its M (the
// loader is told to keep it, and KMM's step that would load waits for the
// unload). A node with the skip label is left to the administrator's M.

// rollVersionLabel is the value the rollout of an owner at version writes
// to a node's M, and why; why is "" when M is left as it is. f is what the
// node says (against the desired module), s its upgrade state after this
// pass, and m its M now. M is written to version, on a managed node whose
// desired module is known,
//   - from the load step on (module-update-required, validation,
//     uncordon): the rollout owns M while it moves the node;
//   - when nothing of the owner is loaded there, no upgrade is under way
//     and M is not set (a new node): it is loaded at once, as a new node
//     is without a version.
func rollVersionLabel(f upgrade.Node, s upgrade.State, m, version string) (string, string) {
	switch {
	case version == "" || m == version || f.Skip || f.Target == "":
		return "", ""
	case s.LoadsNew():
		return version, "the rolling upgrade reached the node's " + string(upgrade.Load) + " step"
	case m == "" && !f.Loaded && !s.InProgress():
		return version, "the rolling upgrade loads a node with nothing loaded at once"
	}
	return "", ""
}
