package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/dashboard"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/wire"
)

// probeTimeout is the probes' timeout in these tests: it only ends a probe
// that hangs, for with fall 1 one slow answer on a busy machine would
// mark a healthy instance down.
const probeTimeout = 10 * time.Second

// slotServer answers the probe contract for slot.
func slotServer(t *testing.T, slot string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("slot") != slot {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// fixture is an admin API in front of a real controller and store.
type fixture struct {
	url   string
	ctrl  *control.Controller
	blue  []string
	green string
}

const secret = "s3cret-token-for-ci-0123456789"

func newFixture(t *testing.T, opts api.Options) *fixture {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{blue: []string{slotServer(t, "blue"), slotServer(t, "blue")}, green: slotServer(t, "green")}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.ctrl, err = control.New(context.Background(), control.Config{
		Slots:   []control.Slot{{Name: "blue", Addrs: f.blue}, {Name: "green", Addrs: []string{f.green}}},
		Active:  "blue",
		Store:   st,
		Health:  health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
		Measure: control.Measure{Before: 100 * time.Millisecond, After: 100 * time.Millisecond},
		Logger:  quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.ctrl.Close)
	opts.Logger = quiet
	srv := httptest.NewServer(api.NewHandler(f.ctrl, opts))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	vstest.WaitFor(t, 5*time.Second, func() error {
		if s := f.ctrl.Status(); s.Slots[0].Routable != 2 || s.Slots[1].Routable != 1 {
			return fmt.Errorf("not every instance is healthy yet")
		}
		return nil
	})
	return f
}

// call sends a request and decodes the JSON answer into out (if not nil).
func (f *fixture) call(t *testing.T, method, path, token, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if method != "GET" && method != "HEAD" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	var probe any
	if err := json.Unmarshal(raw, &probe); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
	}
	if out != nil {
		json.Unmarshal(raw, out)
	}
	return resp.StatusCode
}

func TestEndpoints(t *testing.T) {
	f := newFixture(t, api.Options{})
	drainPath := "/v1/slots/blue/instances/" + f.blue[0]
	cases := []struct {
		name, method, path, body string
		status                   int
		field, want              string
	}{
		{"status", "GET", "/v1/status", "", 200, "active", "blue"},
		{"dry-run swap changes nothing", "POST", "/v1/swap", `{"dry_run":true}`, 200, "to", "green"},
		{"swap", "POST", "/v1/swap", `{"reason":"release 2"}`, 200, "to", "green"},
		{"rollback", "POST", "/v1/rollback", "", 200, "to", "blue"},
		{"stale if_revision", "POST", "/v1/swap", `{"if_revision":1}`, 409, "error", "state is at revision 3, not 1"},
		{"drain", "POST", drainPath + "/drain", "", 200, "instance", "blue/" + f.blue[0]},
		{"drain the last routable instance of the active slot", "POST", "/v1/slots/blue/instances/" + f.blue[1] + "/drain", "", 409, "error", "last routable instance"},
		{"ready", "POST", drainPath + "/ready", "", 200, "operation", "ready"},
		{"drain an unknown instance", "POST", "/v1/slots/blue/instances/127.0.0.1:1/drain", "", 404, "error", `slot "blue" has no instance 127.0.0.1:1`},
		{"drain in an unknown slot", "POST", "/v1/slots/red/instances/127.0.0.1:1/drain", "", 404, "error", `no slot "red"`},
		{"malformed JSON", "POST", "/v1/swap", `{"force":`, 400, "error", "malformed JSON body"},
		{"unknown field", "POST", "/v1/swap", `{"forse":true}`, 400, "error", `unknown field "forse"`},
		{"wrong type", "POST", "/v1/swap", `{"force":"yes"}`, 400, "error", "malformed JSON body"},
		{"two values", "POST", "/v1/swap", `{} {}`, 400, "error", "more than one value"},
		{"history limit out of range", "GET", "/v1/history?limit=0", "", 400, "error", "limit: want a whole number from 1 to 1000"},
		{"history entry", "GET", "/v1/history/2", "", 200, "operation", "swap"},
		{"missing history entry", "GET", "/v1/history/999", "", 404, "error", "no history entry 999"},
		{"unknown endpoint", "GET", "/v1/nope", "", 404, "error", "no such endpoint"},
		{"wrong method", "GET", "/v1/swap", "", 404, "error", "no such endpoint"},
		{"liveness", "GET", "/healthz", "", 200, "status", "ok"},
		{"readiness", "GET", "/readyz", "", 200, "status", "ready"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out map[string]any
			if code := f.call(t, c.method, c.path, "", c.body, &out); code != c.status {
				t.Fatalf("status %d, want %d (%v)", code, c.status, out)
			}
			if got := fmt.Sprint(out[c.field]); !strings.Contains(got, c.want) {
				t.Fatalf("%s = %q, want it to contain %q", c.field, got, c.want)
			}
		})
	}

	var h []wire.HistoryEntry
	f.call(t, "GET", "/v1/history", "", "", &h)
	var ops []string
	for _, e := range h {
		ops = append(ops, e.Operation+":"+e.Result)
	}
	want := "ready:applied drain:refused drain:applied swap:refused rollback:applied swap:applied seed:applied"
	if got := strings.Join(ops, " "); got != want {
		t.Fatalf("history %q, want %q", got, want)
	}
	if h[5].Reason != "release 2" || h[5].Actor != "local" || h[5].Revision != 2 {
		t.Fatalf("swap entry %+v: want reason, actor local, revision 2", h[5])
	}
}

func TestSwapIsMeasured(t *testing.T) {
	f := newFixture(t, api.Options{})
	var res wire.Change
	if code := f.call(t, "POST", "/v1/swap", "", "", &res); code != 200 {
		t.Fatalf("swap: %d", code)
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		var e wire.HistoryEntry
		f.call(t, "GET", fmt.Sprint("/v1/history/", res.HistoryID), "", "", &e)
		if e.Measurement == nil || !e.Measurement.Complete {
			return fmt.Errorf("entry %d not measured yet: %+v", res.HistoryID, e)
		}
		return nil
	})
}

// TestConcurrentSwaps is the proof for concurrency: 100 swaps at once all
// apply one after the other, the history agrees, and nobody gets a 5xx.
// With a shared if_revision, exactly one wins.
func TestConcurrentSwaps(t *testing.T) {
	f := newFixture(t, api.Options{})
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			code := f.call(t, "POST", "/v1/swap", "", "", nil)
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	var h []wire.HistoryEntry
	f.call(t, "GET", "/v1/history?limit=1000", "", "", &h)
	applied := 0
	for _, e := range h {
		if e.Operation == "swap" && e.Result == "applied" {
			applied++
		}
	}
	var s wire.Status
	f.call(t, "GET", "/v1/status", "", "", &s)
	wantActive := map[bool]string{true: "blue", false: "green"}[applied%2 == 0]
	if codes[200] != applied || applied != 100 || s.Active != wantActive {
		t.Fatalf("answers %v, %d applied swaps in history, active %s; want 100 applied and active %s", codes, applied, s.Active, wantActive)
	}

	rev := s.Revision
	body := fmt.Sprintf(`{"if_revision":%d}`, rev)
	codes = map[int]int{}
	revisions := map[uint64]int{}
	for range 50 {
		wg.Go(func() {
			var out wire.ErrorBody
			code := f.call(t, "POST", "/v1/swap", "", body, &out)
			mu.Lock()
			codes[code]++
			if code == 409 {
				revisions[out.Revision]++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 1 || codes[409] != 49 || revisions[rev+1] != 49 {
		t.Fatalf("answers %v, conflict revisions %v; want 1 winner and 49 conflicts naming revision %d", codes, revisions, rev+1)
	}
}

// TestAuth: with a token, every change without it (or with a wrong one) is
// a 401 that changes nothing; reads stay open on loopback and need the
// token when reads are protected.
func TestAuth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("# operators\nci "+secret+"\n"), 0o600)
	tokens, err := api.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, protectReads := range []bool{false, true} {
		t.Run(fmt.Sprint("protect reads ", protectReads), func(t *testing.T) {
			f := newFixture(t, api.Options{Tokens: api.NewTokenSet(tokens), ProtectReads: protectReads})
			before := f.ctrl.Status()
			beforeHistory, _ := f.ctrl.History(context.Background(), 0, 0)
			mutating := []string{"/v1/swap", "/v1/rollback",
				"/v1/slots/blue/instances/" + f.blue[0] + "/drain", "/v1/slots/blue/instances/" + f.blue[0] + "/ready"}
			for _, p := range mutating {
				for _, token := range []string{"", "wrong-token-0123456789abcdef", secret + "x"} {
					var out map[string]any
					if code := f.call(t, "POST", p, token, "", &out); code != 401 || out["error"] != "unauthorized" {
						t.Errorf("POST %s with token %q: %d %v, want 401 unauthorized", p, token, code, out)
					}
				}
			}
			after := f.ctrl.Status()
			afterHistory, _ := f.ctrl.History(context.Background(), 0, 0)
			if after.Revision != before.Revision || len(afterHistory) != len(beforeHistory) {
				t.Fatalf("refused calls changed state: revision %d -> %d, history %d -> %d",
					before.Revision, after.Revision, len(beforeHistory), len(afterHistory))
			}
			wantRead := map[bool]int{false: 200, true: 401}[protectReads]
			if code := f.call(t, "GET", "/v1/status", "", "", nil); code != wantRead {
				t.Errorf("GET /v1/status without token: %d, want %d", code, wantRead)
			}
			for _, p := range []string{"/healthz", "/readyz"} {
				if code := f.call(t, "GET", p, "", "", nil); code != 200 {
					t.Errorf("GET %s without token: %d, want 200", p, code)
				}
			}
			var res wire.Change
			if code := f.call(t, "POST", "/v1/swap", secret, "", &res); code != 200 {
				t.Fatalf("swap with the token: %d", code)
			}
			var e wire.HistoryEntry
			f.call(t, "GET", fmt.Sprint("/v1/history/", res.HistoryID), secret, "", &e)
			if e.Actor != "ci" {
				t.Fatalf("history actor %q, want the token's name ci", e.Actor)
			}
		})
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		content string
		mode    os.FileMode
		want    string
	}{
		"too short":             {"abc\n", 0o600, "shorter than 16"},
		"empty":                 {"# nothing\n", 0o600, "no token"},
		"duplicate name":        {"a " + secret + "\na " + secret + "2\n", 0o600, `token name "a" is used twice`},
		"three fields":          {"a b c\n", 0o600, "want SECRET or NAME SECRET"},
		"one secret, two names": {"ci " + secret + "\n# later\nalice  " + secret + "\n", 0o600, `:3: token "alice" has the same secret as token "ci"`},
		"unnamed and named":     {secret + "\nci " + secret + "\n", 0o400, `token "ci" has the same secret as token "admin"`},
		"readable by others":    {"ci " + secret + "\n", 0o644, "permissions 0644 are too open"},
		"readable by group":     {"ci " + secret + "\n", 0o640, "chmod 600"},
		"writable by others":    {"ci " + secret + "\n", 0o602, "permissions 0602 are too open"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		_, err := api.LoadTokens(path)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one line with %q without the secret", name, err, c.want)
		}
	}
	// Owner-only modes are fine, read-only included.
	path := filepath.Join(dir, "good")
	os.WriteFile(path, []byte("ci "+secret+"\nalice "+secret+"-alice\n"), 0o400)
	if tokens, err := api.LoadTokens(path); err != nil || len(tokens) != 2 {
		t.Fatalf("a 0400 file with two tokens: %d tokens, %v", len(tokens), err)
	}
}

// TestDocumentedEndpointsExist keeps docs/api.md and the server in sync:
// every "## METHOD /path" heading must reach a handler.
func TestDocumentedEndpointsExist(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, api.Options{
		Metrics:   promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}),
		Rates:     func() []wire.RateSample { return nil },
		Dashboard: dashboard.Handler(),
		Reload:    func(context.Context, wire.ChangeRequest) (wire.Change, error) { return wire.Change{}, nil },
		Upgrade: func(context.Context, wire.UpgradeRequest) (wire.UpgradeResult, error) {
			return wire.UpgradeResult{}, nil
		},
	})
	heading := regexp.MustCompile(`(?m)^## (GET|POST) (/\S*)$`)
	found := heading.FindAllStringSubmatch(string(doc), -1)
	if len(found) < 9 {
		t.Fatalf("docs/api.md documents %d endpoints, want at least 9", len(found))
	}
	r := strings.NewReplacer("{slot}", "blue", "{addr}", f.blue[0], "{id}", "1")
	for _, m := range found {
		// Not f.call: /metrics and the dashboard do not answer JSON.
		req, _ := http.NewRequest(m[1], f.url+r.Replace(m[2]), nil)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 404 && strings.Contains(string(body), "no such endpoint") || resp.StatusCode == 405 {
			t.Errorf("documented endpoint %s %s is not served (%d)", m[1], m[2], resp.StatusCode)
		}
	}
}

// TestReloadForce: POST /v1/reload answers 409, naming the slot, when the
// reload would leave prod's slot without a routable instance, and applies
// it with {"force": true}.
func TestReloadForce(t *testing.T) {
	var f *fixture
	f = newFixture(t, api.Options{Reload: func(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
		return f.ctrl.Reload(ctx, control.Reload{
			Slots:   []control.Slot{{Name: "blue", Addrs: []string{"127.0.0.1:1"}}, {Name: "green", Addrs: []string{f.green}}},
			Health:  health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
			Request: req,
		})
	}})
	var refused struct{ Error string }
	if code := f.call(t, "POST", "/v1/reload", "", `{"reason":"typo"}`, &refused); code != http.StatusConflict || !strings.Contains(refused.Error, "slots.blue takes prod traffic") {
		t.Fatalf("reload emptying blue: %d %q, want a 409 naming slots.blue", code, refused.Error)
	}
	var res wire.Change
	if code := f.call(t, "POST", "/v1/reload", "", `{"force":true}`, &res); code != http.StatusOK || !res.Applied || !res.Forced {
		t.Fatalf("forced reload: %d %+v, want applied and forced", code, res)
	}
}
