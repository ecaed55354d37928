//go:build race

package proxy

// raceEnabled is true under the race detector, which allocates on its own.
const raceEnabled = true
