package release

import (
	"testing"

	"github.com/vipswap/vipswap/control"
)

// A slot removed while a release runs takes its counters with it: the
// meter keeps what it counted and never wraps around; the instances' 5xx
// and the clients' mistakes are counted beside the requests.
func TestMeterSurvivesARemovedSlot(t *testing.T) {
	var m meter
	n := func(requests, errs uint64) control.Served {
		return control.Served{Requests: requests, InstanceErrors: errs, ClientErrors: errs / 2}
	}
	steps := []struct {
		now    map[string]control.Served
		failed uint64
		want   counted
	}{
		{map[string]control.Served{"blue": n(1000, 10), "v6": n(500, 0)}, 7, counted{}},                           // the baseline
		{map[string]control.Served{"blue": n(1100, 10), "v6": n(550, 4)}, 7, counted{150, 0, 4, 2}},               // both grew
		{map[string]control.Served{"blue": n(1200, 12)}, 9, counted{250, 2, 6, 3}},                                // v6 removed
		{map[string]control.Served{"blue": n(1300, 12), "v7": n(40, 2)}, 9, counted{390, 2, 8, 4}},                // v7 added since
		{map[string]control.Served{"blue": n(1300, 12), "v7": n(40, 2), "v6": n(5, 0)}, 9, counted{395, 2, 8, 4}}, // v6 again, anew
	}
	for i, s := range steps {
		if got := m.add(s.now, s.failed); got != s.want {
			t.Fatalf("step %d: %+v; want %+v", i, got, s.want)
		}
	}
}
