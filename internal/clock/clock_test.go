package clock

import (
	"strings"
	"testing"
	"time"
)

// TestReadingsAgree: Now, Nanos and At give the same instants, carry
// monotonic readings (a deadline from them is measured on the monotonic
// clock), and order themselves with time.Now's.
func TestReadingsAgree(t *testing.T) {
	before := time.Now()
	n := Now()
	ns := Nanos()
	after := time.Now()
	if n.Before(before) || n.After(after) {
		t.Errorf("Now %v is not between %v and %v", n, before, after)
	}
	if d := time.Duration(ns - n.UnixNano()); d < 0 || d > after.Sub(before) {
		t.Errorf("Nanos is %v from Now, read after it", d)
	}
	at := At(ns)
	if at.UnixNano() != ns {
		t.Errorf("At(%d).UnixNano() = %d", ns, at.UnixNano())
	}
	// A monotonic reading is shown by String as "m=".
	for name, tm := range map[string]time.Time{"Now": n, "At": at, "At+1s": At(ns + int64(time.Second))} {
		if s := tm.String(); !strings.Contains(s, "m=+") {
			t.Errorf("%s carries no monotonic reading: %s", name, s)
		}
	}
	if got := At(ns + int64(time.Hour)).Sub(at); got != time.Hour {
		t.Errorf("At(ns+1h) - At(ns) = %v", got)
	}
	if d := time.Until(At(ns + int64(time.Hour))); d <= 0 || d > time.Hour {
		t.Errorf("time.Until an hour ahead = %v", d)
	}
}

func BenchmarkNow(b *testing.B) {
	for b.Loop() {
		Now()
	}
}

func BenchmarkTimeNow(b *testing.B) {
	for b.Loop() {
		time.Now()
	}
}

// TestRefresh: a deadline is moved only once a quarter of its timeout has
// passed, or when it lies beyond the timeout; each move sets the deadline
// returned.
func TestRefresh(t *testing.T) {
	var set []time.Time
	record := func(d time.Time) error { set = append(set, d); return nil }
	const timeout = time.Hour
	d := Refresh(record, 0, timeout) // none yet: set
	if len(set) != 1 || set[0].UnixNano() != d {
		t.Fatalf("first refresh set %v, returned %d", set, d)
	}
	if again := Refresh(record, d, timeout); again != d || len(set) != 1 {
		t.Fatalf("a fresh deadline was moved: %d to %d, %d sets", d, again, len(set))
	}
	old := d - int64(timeout)/2 // half the timeout passed since it was set
	if moved := Refresh(record, old, timeout); moved <= old || len(set) != 2 || set[1].UnixNano() != moved {
		t.Fatalf("a deadline half-way gone was not moved: %d to %d, %d sets", old, moved, len(set))
	}
	far := Nanos() + 2*int64(timeout) // the timeout got shorter
	if moved := Refresh(record, far, timeout); moved >= far || len(set) != 3 {
		t.Fatalf("a deadline beyond the timeout was kept: %d to %d", far, moved)
	}
}
