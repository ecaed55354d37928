//go:build !unix

package config

import "testing"

// makeFIFO returns "": no named pipes here, the case is skipped.
func makeFIFO(*testing.T, string) string { return "" }
