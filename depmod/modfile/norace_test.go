//go:build !race

package modfile

const raceEnabled = false
