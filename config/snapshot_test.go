package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// waits records the waits a snapshot asks for instead of sleeping.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.d = append(w.d, d)
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotRereadsAFileThatChanged: a file that changes between the
// two reads of an attempt (same size, so only the bytes tell) is read
// again, and the version that stays is returned.
func TestSnapshotRereadsAFileThatChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipswap.yaml")
	writeFile(t, path, "one")
	var w waits
	calls := 0
	s := snapshot{settle: time.Second, tries: 3, sleep: w.sleep, between: func() {
		calls++
		if calls == 1 {
			writeFile(t, path, "two")
		}
	}}
	data, err := s.read(path)
	if err != nil || string(data) != "two" {
		t.Fatalf("read: %q, %v; want the second version", data, err)
	}
	if calls != 2 {
		t.Fatalf("%d attempts, want 2", calls)
	}
	if got := w.all(); len(got) != 2 || got[0] != time.Second || got[1] != time.Second {
		t.Fatalf("waits %v: want the settle time before each second read", got)
	}
}

// TestSnapshotSeesAFileReplaced: a file renamed into place between the
// two reads (same bytes, another inode) is read again.
func TestSnapshotSeesAFileReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vipswap.yaml")
	writeFile(t, path, "same")
	calls := 0
	s := snapshot{settle: time.Second, tries: 3, sleep: func(time.Duration) {}, between: func() {
		calls++
		if calls == 1 {
			tmp := filepath.Join(dir, "tmp")
			writeFile(t, tmp, "same")
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
	}}
	if data, err := s.read(path); err != nil || string(data) != "same" || calls != 2 {
		t.Fatalf("read: %q, %v after %d attempts; want the file after 2", data, err, calls)
	}
}

// TestSnapshotOfAStillFileWaitsOnce: a file that does not change is read
// twice, settle apart, however old its modification time says it is: a
// file truncated just now can carry a time hundreds of milliseconds old.
func TestSnapshotOfAStillFileWaitsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipswap.yaml")
	writeFile(t, path, "old")
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	var w waits
	s := snapshot{settle: time.Second, tries: 3, sleep: w.sleep}
	if data, err := s.read(path); err != nil || string(data) != "old" {
		t.Fatalf("read: %q, %v", data, err)
	}
	if got := w.all(); len(got) != 1 || got[0] != time.Second {
		t.Fatalf("waits %v, want one of the settle time", got)
	}
}

// TestSnapshotGivesUpOnAFileThatKeepsChanging: a file that changes at
// every attempt is refused with a message that says so and how to edit
// safely.
func TestSnapshotGivesUpOnAFileThatKeepsChanging(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipswap.yaml")
	writeFile(t, path, "0")
	calls := 0
	s := snapshot{settle: time.Second, tries: 4, sleep: func(time.Duration) {}, between: func() {
		calls++
		writeFile(t, path, strings.Repeat("x", calls))
	}}
	_, err := s.read(path)
	if err == nil || !strings.Contains(err.Error(), "changed while it was read") || !strings.Contains(err.Error(), "rename") {
		t.Fatalf("read: %v; want a refusal saying the file changed while it was read", err)
	}
	if calls != 4 {
		t.Fatalf("%d attempts, want 4", calls)
	}
	if _, err := s.read(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read of a missing file: %v, want ErrNotExist", err)
	}
}

// TestLoadDuringAnInPlaceWrite: while a writer truncates the file and
// writes it again in pieces a millisecond apart (each prefix at a line end
// parses), now and then leaving it still for a while, a read returns the
// complete file or says the file was changing, never a prefix. (A file
// just truncated can carry a modification time hundreds of milliseconds
// old: trusting its age to skip the second read takes the empty file.)
func TestLoadDuringAnInPlaceWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipswap.yaml")
	complete := valid
	writeFile(t, path, complete)
	want, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	at := strings.Index(complete, "slots:")
	pieces := []string{complete[:at/2], complete[at/2 : at]}
	pieces = append(pieces, strings.SplitAfter(complete[at:], "\n")...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		vstest.RewriteInPlace(t, path, func(int) []string { return pieces }, stop)
	})
	reads, partial, changing := 0, 0, 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); reads++ {
		data, err := ReadSnapshot(path)
		switch {
		case err != nil && strings.Contains(err.Error(), "changed while it was read"):
			changing++
		case err != nil:
			t.Fatal(err)
		case string(data) != complete:
			if partial++; partial <= 3 {
				t.Errorf("read a version of %d bytes during a write, want the complete %d", len(data), len(complete))
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reads: %d partial, %d refused as changing", reads, partial, changing)
	got, err := Load(path)
	if err != nil || !slices.Equal(got.SlotOrder, want.SlotOrder) {
		t.Fatalf("load once the file is still: %v", err)
	}
}
