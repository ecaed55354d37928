package main

import (
	"context"
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// attackPage is what a page on another origin tries against the admin API
// of an operator's vipswap (no token, as in the quickstart): fetches in
// no-cors mode, which a browser sends without asking, with and without a
// JSON content type it silently drops; a CORS fetch with JSON, which needs
// a preflight; and HTML forms posting text/plain whose body is valid JSON,
// to swap and to force-drain an instance. window.attacks resolves once every
// request has been answered (or failed).
var attackPage = template.Must(template.New("").Parse(`<!doctype html>
<title>cat pictures</title>
<iframe name="f1"></iframe><iframe name="f2"></iframe>
<form id="swap" method="POST" enctype="text/plain" target="f1" action="{{.Admin}}/v1/swap">
<input name='{"force":true,"reason":"' value='"}'></form>
<form id="drain" method="POST" enctype="text/plain" target="f2" action="{{.Admin}}/v1/slots/blue/instances/{{.Instance}}/drain">
<input name='{"force":true,"reason":"' value='"}'></form>
<script>
const loaded = name => new Promise(resolve => { document.querySelector("iframe[name=" + name + "]").onload = resolve; });
const settle = p => p.then(r => r.type + " " + r.status, e => "failed: " + e);
window.attacks = Promise.all([
  settle(fetch("{{.Admin}}/v1/swap", {method: "POST", mode: "no-cors", body: '{"reason":"no-cors"}'})),
  settle(fetch("{{.Admin}}/v1/swap", {method: "POST", mode: "no-cors", headers: {"Content-Type": "application/json"}, body: "{}"})),
  settle(fetch("{{.Admin}}/v1/rollback", {method: "POST", mode: "no-cors"})),
  settle(fetch("{{.Admin}}/v1/swap", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"})),
  (() => { const p = loaded("f1"); document.getElementById("swap").submit(); return p.then(() => "form swap sent"); })(),
  (() => { const p = loaded("f2"); document.getElementById("drain").submit(); return p.then(() => "form drain sent"); })(),
]).then(r => r.join("; "));
</script>`))

// rebinding is what a DNS-rebinding page runs once its name points at the
// admin address: same-origin requests for the browser, so it could read
// the answers.
const rebinding = `(async () => {
  const read = await fetch("/v1/status");
  const status = await read.text();
  const swap = await fetch("/v1/swap", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
  const history = await fetch("/v1/history");
  return JSON.stringify({status: read.status, body: status, swap: swap.status, history: history.status});
})()`

// TestBrowserCannotDriveAdmin is the proof that no web page can drive the
// admin API from an operator's browser: a page on another port of
// 127.0.0.1 tries each cross-origin attack, and a page on evil.example
// (resolved to 127.0.0.1, as DNS rebinding does) tries to read status and
// swap. The state revision and the history stay exactly as they were, the
// rebinding page reads nothing, and the operator's own calls still work.
func TestBrowserCannotDriveAdmin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 2)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	ctx := context.Background()
	before, err := sw.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	beforeHistory, err := sw.Client.History(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}

	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		attackPage.Execute(w, map[string]string{"Admin": sw.Admin, "Instance": addrs["blue"][0]})
	}))
	defer evil.Close()
	bctx := newBrowser(t, 10*time.Minute, // only ends a hung test
		chromedp.Flag("host-resolver-rules", "MAP evil.example 127.0.0.1"))

	if err := chromedp.Do(bctx, chromedp.Navigate(evil.URL+"/")); err != nil {
		t.Fatal(err)
	}
	outcome, err := chromedp.Run(bctx, chromedp.Evaluate[string](`window.attacks`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("the attack page did not finish: %v", err)
	}
	t.Logf("cross-origin attacks: %s", outcome)
	if strings.Count(outcome, "sent") != 2 {
		t.Fatalf("the forms were not both submitted: %s", outcome)
	}

	_, port, _ := net.SplitHostPort(strings.TrimPrefix(sw.Admin, "http://"))
	if err := chromedp.Do(bctx, chromedp.Navigate("http://evil.example:"+port+"/")); err != nil {
		t.Fatal(err)
	}
	raw, err := chromedp.Run(bctx, chromedp.Evaluate[string](rebinding, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("the rebinding page did not finish: %v", err)
	}
	var reb struct {
		Status, Swap, History int
		Body                  string
	}
	if err := json.Unmarshal([]byte(raw), &reb); err != nil {
		t.Fatalf("rebinding result %q: %v", raw, err)
	}
	t.Logf("rebinding: %+v", reb)
	if reb.Status != 403 || reb.History != 403 || reb.Swap != 403 || strings.Contains(reb.Body, `"revision"`) ||
		!strings.Contains(reb.Body, `host \"evil.example:`+port+`\" is not allowed`) {
		t.Errorf("the rebinding page got status %d, history %d, swap %d, body %.200q; want 403 for each, naming the host and revealing nothing",
			reb.Status, reb.History, reb.Swap, reb.Body)
	}

	after, err := sw.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	afterHistory, err := sw.Client.History(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	drained := 0
	for _, s := range after.Slots {
		for _, i := range s.Instances {
			if i.Drained {
				drained++
			}
		}
	}
	if after.Revision != before.Revision || after.Active != before.Active || drained != 0 {
		t.Errorf("a web page changed the state: revision %d -> %d, active %s -> %s, %d drained",
			before.Revision, after.Revision, before.Active, after.Active, drained)
	}
	if len(afterHistory) != len(beforeHistory) {
		b, _ := json.Marshal(afterHistory)
		t.Errorf("a web page left history entries: %d -> %d: %s", len(beforeHistory), len(afterHistory), b)
	}

	// The operator's own tools are unaffected.
	if res, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: "after the attacks"}); err != nil || !res.Applied {
		t.Fatalf("the operator's swap: %+v, %v", res, err)
	}
}
