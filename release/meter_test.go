package release

import (
	"testing"

	"github.com/vipswap/vipswap/control"
)

// The meter counts the totals' growth since the release began: the
// instances' 5xx and the clients' mistakes beside the requests.
func TestMeterCountsFromTheStart(t *testing.T) {
	var m meter
	steps := []struct {
		now    control.Served
		failed uint64
		want   counted
	}{
		{control.Served{Requests: 1500, InstanceErrors: 10, ClientErrors: 5}, 7, counted{}}, // the baseline
		{control.Served{Requests: 1650, InstanceErrors: 14, ClientErrors: 7}, 7, counted{150, 0, 4, 2}},
		{control.Served{Requests: 1900, InstanceErrors: 16, ClientErrors: 8}, 9, counted{400, 2, 6, 3}},
	}
	for i, s := range steps {
		if got := m.add(s.now, s.failed); got != s.want {
			t.Fatalf("step %d: %+v; want %+v", i, got, s.want)
		}
	}
}
