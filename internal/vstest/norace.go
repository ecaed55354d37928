//go:build !race

package vstest

const raceEnabled = false
