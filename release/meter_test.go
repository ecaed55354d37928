package release

import "testing"

// A slot removed while a release runs takes its counters with it: the
// meter keeps what it counted and never wraps around.
func TestMeterSurvivesARemovedSlot(t *testing.T) {
	var m meter
	steps := []struct {
		now           map[string]uint64
		failed        uint64
		requests, bad uint64
	}{
		{map[string]uint64{"blue": 1000, "v6": 500}, 7, 0, 0},           // the baseline
		{map[string]uint64{"blue": 1100, "v6": 550}, 7, 150, 0},         // both grew
		{map[string]uint64{"blue": 1200}, 9, 250, 2},                    // v6 removed
		{map[string]uint64{"blue": 1300, "v7": 40}, 9, 390, 2},          // v7 added since
		{map[string]uint64{"blue": 1300, "v7": 40, "v6": 5}, 9, 395, 2}, // v6 again, anew
	}
	for i, s := range steps {
		requests, failed := m.add(s.now, s.failed)
		if requests != s.requests || failed != s.bad {
			t.Fatalf("step %d: %d requests, %d failed; want %d and %d", i, requests, failed, s.requests, s.bad)
		}
	}
}
