package vstest

import (
	"os"
	"testing"
	"time"
)

// RewriteInPlace rewrites the file at path in place, as an editor that
// truncates and writes does, until stop is closed: round i truncates the
// file and writes pieces(i) one a millisecond (a slow writer), then leaves
// the complete file still for 20 ms, and every tenth round for 400 ms
// (long enough to be read whole). It returns when stop is closed.
func RewriteInPlace(t testing.TB, path string, pieces func(round int) []string, stop <-chan struct{}) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 1; ; i++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		for _, p := range pieces(i) {
			<-tick.C
			f.WriteString(p)
		}
		f.Close()
		still := 20 * time.Millisecond
		if i%10 == 0 {
			still = 400 * time.Millisecond
		}
		select {
		case <-stop:
			return
		case <-time.After(still):
		}
	}
}
