package identity

// SpecHashAnnotation is the key of the annotation on the DaemonSets kmmkit
// makes for o (its device plugin's) that records a hash of what kmmkit
// asked for, so that a pass patches a DaemonSet only when the spec changed
// or someone edited what kmmkit set: kmmkit.io/spec-hash for KMM's Modules
// (KMM itself sets no annotation there), D/spec-hash for an embedder.
func (o Owner) SpecHashAnnotation() string {
	if o.Domain.IsKMM() {
		return "kmmkit.io/spec-hash"
	}
	return o.Domain.prefix() + "/spec-hash"
}
