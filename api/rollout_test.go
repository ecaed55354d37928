package api_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

// TestChangesRaceOnOneRevision (issue 11): a shift, a swap and a rollout
// start made at once against the same revision: exactly one applies, the
// others are refused with 409 naming the revision it made.
func TestChangesRaceOnOneRevision(t *testing.T) {
	f := newFixture(t, api.Options{})
	for round := range 10 {
		var st wire.Status
		f.call(t, "GET", "/v1/status", "", "", &st)
		rev := st.Revision
		paths := []struct{ path, body string }{
			{"/v1/shift", fmt.Sprintf(`{"to":"green","weight":20,"if_revision":%d}`, rev)},
			{"/v1/swap", fmt.Sprintf(`{"if_revision":%d}`, rev)},
			{"/v1/rollout", fmt.Sprintf(`{"to":"green","steps":[10,100],"interval":"1h","if_revision":%d}`, rev)},
		}
		codes := make([]int, len(paths))
		bodies := make([]wire.ErrorBody, len(paths))
		var wg sync.WaitGroup
		for i, p := range paths {
			wg.Go(func() { codes[i] = f.call(t, "POST", p.path, "", p.body, &bodies[i]) })
		}
		wg.Wait()
		f.call(t, "GET", "/v1/status", "", "", &st)
		applied := 0
		for i, code := range codes {
			switch {
			case code == 200:
				applied++
			case code == 409 && bodies[i].Revision == st.Revision:
			default:
				t.Fatalf("round %d: %s answered %d %+v (state at %d)", round, paths[i].path, code, bodies[i], st.Revision)
			}
		}
		if applied != 1 || st.Revision != rev+1 {
			t.Fatalf("round %d: %d applied, revision %d -> %d; want exactly one", round, applied, rev, st.Revision)
		}
		// Back to a plain state for the next round.
		f.call(t, "POST", "/v1/abort", "", "", nil)
		if st.Active == "green" {
			f.call(t, "POST", "/v1/swap", "", "", nil)
		}
	}
}

// TestShiftValidation: weights out of range or finer than 0.1 % are a 400.
func TestShiftValidation(t *testing.T) {
	f := newFixture(t, api.Options{})
	for _, body := range []string{`{"to":"green","weight":101}`, `{"to":"green","weight":-1}`, `{"to":"green","weight":12.34}`,
		`{"to":"green"}`, `{"weight":10}`, `{"to":"green","weight":"10"}`} {
		var e wire.ErrorBody
		if code := f.call(t, "POST", "/v1/shift", "", body, &e); code != 400 {
			t.Errorf("%s: %d %q, want 400", body, code, e.Error)
		}
	}
	if code := f.call(t, "POST", "/v1/shift", "", `{"to":"purple","weight":10}`, nil); code != 404 {
		t.Errorf("shift to an unknown slot: %d, want 404", code)
	}
	var res wire.Change
	if code := f.call(t, "POST", "/v1/shift", "", `{"to":"green","weight":12.5}`, &res); code != 200 || res.Weights["green"] != 12.5 {
		t.Fatalf("shift 12.5: %d %+v", code, res)
	}
}
