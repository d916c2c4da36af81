//go:build race

package store

// raceEnabled: the race detector makes sync.Pool drop some of what it is
// given, so pooled paths allocate now and then.
const raceEnabled = true
