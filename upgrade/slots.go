package upgrade

import "sort"

// Plan is what Admit decided for a pass.
type Plan struct {
	// Admit names the nodes that move from Required to Cordon now.
	Admit []string
	// InProgress and Unavailable count the targeted nodes in an upgrade,
	// and those that are not available (Node.Available), before Admit.
	InProgress, Unavailable int
	// MaxParallel and MaxUnavailable are the policy's limits for the
	// targeted nodes.
	MaxParallel, MaxUnavailable int
	// Failed names the failed nodes; Paused is set when there are at
	// least Policy.FailureThreshold of them, and then nobody is admitted.
	Failed []string
	Paused bool
	// Waiting counts the nodes left in Required (skipped ones included).
	Waiting int
}

// Admit chooses the nodes to admit among nodes, all the targeted nodes
// of one owner, with their states after this pass's Step. It admits a
// Required node, not skipped, while fewer than MaxParallel nodes are in
// progress and, unless the node is unavailable already (admitting it
// makes nothing worse), fewer than MaxUnavailable targeted nodes are
// unavailable. Unavailable candidates go first, then by name. Failed
// nodes hold no slot (they are not in progress) but count as unavailable
// while they are; FailureThreshold of them pause admission.
func Admit(p Policy, nodes []Node) Plan {
	pl := Plan{MaxParallel: p.maxParallel(), MaxUnavailable: p.MaxUnavailableOf(len(nodes))}
	var candidates []Node
	for _, n := range nodes {
		if n.State.InProgress() {
			pl.InProgress++
		}
		if !n.Available() {
			pl.Unavailable++
		}
		switch n.State {
		case Failed:
			pl.Failed = append(pl.Failed, n.Name)
		case Required:
			pl.Waiting++
			if !n.Skip {
				candidates = append(candidates, n)
			}
		}
	}
	sort.Strings(pl.Failed)
	pl.Paused = len(pl.Failed) >= p.failureThreshold()
	if pl.Paused {
		return pl
	}
	sort.Slice(candidates, func(i, j int) bool {
		ai, aj := candidates[i].Available(), candidates[j].Available()
		if ai != aj {
			return !ai
		}
		return candidates[i].Name < candidates[j].Name
	})
	parallel := pl.MaxParallel - pl.InProgress
	unavailable := pl.MaxUnavailable - pl.Unavailable
	for _, c := range candidates {
		if parallel <= 0 {
			break
		}
		if c.Available() {
			if unavailable <= 0 {
				continue
			}
			unavailable--
		}
		parallel--
		pl.Waiting--
		pl.Admit = append(pl.Admit, c.Name)
	}
	return pl
}
