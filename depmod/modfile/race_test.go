//go:build race

package modfile

// raceEnabled: sync.Pool drops a quarter of what it is given under the
// race detector.
const raceEnabled = true
