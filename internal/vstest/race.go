//go:build race

package vstest

const raceEnabled = true
