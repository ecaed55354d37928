//go:build unix

package config

import (
	"path/filepath"
	"syscall"
	"testing"
)

// makeFIFO makes a named pipe in dir and returns its path.
func makeFIFO(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "fifo.crt")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
