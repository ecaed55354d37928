//go:build !unix

package gate

import "os/exec"

// ownGroup does nothing where process groups do not exist: cancellation
// kills the command itself.
func ownGroup(*exec.Cmd) {}

// killGroup does nothing where process groups do not exist.
func killGroup(*exec.Cmd) {}
