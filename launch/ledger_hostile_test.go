//go:build !windows

package launch

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReclaimHostileLedgerFile: a ledger path that is a FIFO (which would
// block the read, and vipswap's start, forever) or a device that never
// ends (/dev/zero, through a symlink: the read would grow without bound)
// is refused at once with an error naming the file, and nothing is
// stopped.
func TestReclaimHostileLedgerFile(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(path string) error
		want string
	}{
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "not a regular file"},
		{"dev-zero", func(p string) error { return os.Symlink("/dev/zero", p) }, "not a regular file"},
		{"huge", func(p string) error { return os.WriteFile(p, make([]byte, maxLedger+10), 0o600) }, "larger than"},
	} {
		for _, how := range []string{"Reclaim", "ReclaimFile"} {
			t.Run(c.name+"/"+how, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "state.instances")
				if err := c.make(path); err != nil {
					t.Fatal(err)
				}
				own := path
				if how == "ReclaimFile" {
					own = path + ".mine"
				}
				l, err := OpenLedger(own, quiet)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				done := make(chan error, 1)
				go func() {
					if how == "Reclaim" { // at a start: the previous run's
						_, err = l.Reclaim(time.Second)
					} else { // a failed new process's, after an upgrade
						_, err = l.ReclaimFile(path, time.Second)
					}
					done <- err
				}()
				var rerr error
				select {
				case rerr = <-done:
				case <-time.After(30 * time.Second):
					// Unblock the reader so that the test ends.
					if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
					t.Fatal("reading the ledger did not return")
				}
				if rerr == nil || !strings.Contains(rerr.Error(), c.want) || !strings.Contains(rerr.Error(), path) {
					t.Fatalf("ledger %s: %v, want an error naming the file and %q", c.name, rerr, c.want)
				}
			})
		}
	}
}
