package registry

// evict makes room in m, which holds at most max entries: it drops the
// stale ones and, if that is not enough, arbitrary ones down to 7/8 of max,
// so a burst of new keys never wipes the whole cache.
func evict[V any](m map[string]V, max int, stale func(V) bool) {
	if len(m) < max {
		return
	}
	for k, v := range m {
		if stale(v) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < max-max/8 {
			break
		}
		delete(m, k)
	}
}
