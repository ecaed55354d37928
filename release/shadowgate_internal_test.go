package release

import (
	"encoding/json"
	"testing"

	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/wire"
)

// A shadow gate that allows no target error (max_error_rate 0, as sent by
// `--shadow-max-error-rate 0` or a plan's `max_error_rate: 0`) fails on
// the first one; only a gate that names no bound gets the 1 % default.
func TestAShadowGateOfZeroErrorsAllowsNone(t *testing.T) {
	f := &wire.ShadowFigures{Same: 999, Error: 1, TargetErrors: 1, ErrorRate: 0.001}
	for _, c := range []struct {
		body   string
		breach bool
	}{
		{`{"duration":"1m","max_error_rate":0}`, true},
		{`{"duration":"1m"}`, false},
	} {
		var g wire.ShadowGate
		if err := json.Unmarshal([]byte(c.body), &g); err != nil {
			t.Fatal(err)
		}
		if _, err := checkShadowGate(&g); err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		breach, _ := rollout.JudgeShadow(f, rollout.ShadowBounds{MinRequests: g.MinRequests, MaxErrorRate: *g.MaxErrorRate})
		if (breach != "") != c.breach {
			t.Errorf("%s: 1 target error in 1000 copies judged %q, want a breach: %v", c.body, breach, c.breach)
		}
	}
}
