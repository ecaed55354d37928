package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// TestDashboardInBrowser opens the dashboard in headless Chromium, reads the
// active slot, clicks Swap and confirms, and sees the active slot change and
// the chart move; then, after two rolling updates and a burst of swaps
// seconds apart under load, it checks that the page reads cleanly at 1280
// and at 800 px wide (layoutCheck). It saves screenshots in
// $VIPSWAP_ARTIFACTS (the test script sets it; docs/dashboard.png and
// docs/dashboard-rollout.png are two of them).
func TestDashboardInBrowser(t *testing.T) {
	dir := t.TempDir()
	// Versions on the slots, and a third slot whose one instance refuses
	// connections: the page must say what runs where and why it is down.
	slots := strings.Replace(strings.Replace(managedSlots, "  blue:\n", "  blue:\n    version: \"1.0\"\n", 1),
		"  green:\n", "  green:\n    version: \"2.0\"\n", 1) + "  red:\n    instances: [" + refusedAddr(t) + "]\n"
	// A path judged on its own gives the analysis a row under the canary;
	// a p99 bound shows a latency in the analysis's bounds.
	slots += "analysis:\n  paths: [/api/]\n  max_p99: 5s\n"
	sw := switchtest.Serve(t, dir, testConfig(dir, slots))
	vstest.WaitFor(t, 30*time.Second, func() error {
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			return err
		}
		if st.Slots[0].Routable != 2 || st.Slots[1].Routable != 2 {
			return errNotYet
		}
		return nil
	})
	load := vstest.StartLoad(sw.Prod+"/api/test", 4, time.Minute)
	defer load.Stop()
	ctx := context.Background()
	bctx := newBrowser(t, 10*time.Minute) // only ends a hung test

	active := func() string {
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById("active-slot").textContent`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	chartTotal := func() int {
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`+document.getElementById("chart").dataset.total`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// until waits for a JavaScript condition to hold on the page, like
	// vstest.WaitFor at least vstest.MinWait: a busy machine's browser may
	// take many times longer than an idle one's.
	until := func(cond string, timeout time.Duration) error {
		_, err := chromedp.Run(bctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(max(timeout, vstest.MinWait))))
		return err
	}

	if err := chromedp.Do(bctx, chromedp.Navigate(sw.Admin+"/")); err != nil {
		t.Fatal(err)
	}
	if err := until(`document.querySelectorAll("[data-instance]").length === 5`, 20*time.Second); err != nil {
		t.Fatalf("the page did not show the five instances: %v", err)
	}
	// What runs where, and why an instance is down (issue 16, point 5).
	if err := until(`document.querySelector('[data-slot="green"] .version').textContent === "v2.0"`, 5*time.Second); err != nil {
		t.Fatalf("the page does not show green's version: %v", err)
	}
	if err := until(`document.querySelector('[data-slot="red"] td.health').textContent.startsWith("down: L4CON connection refused for")`, 10*time.Second); err != nil {
		t.Fatalf("the page does not say why red's instance is down: %v", err)
	}
	if err := until(`document.querySelector('[data-listener="prod"]').textContent.includes("blue 100%")`, 5*time.Second); err != nil {
		t.Fatalf("the page does not show prod's weights: %v", err)
	}
	// Every summary names errors alike: failed, instance errors, client errors.
	if err := until(`document.querySelector('[data-listener="prod"]').textContent.endsWith(" · 0 failed, 0 instance errors (5xx), 0 client errors")`, 5*time.Second); err != nil {
		t.Fatalf("the page does not name prod's errors as the CLI does: %v", err)
	}
	if got := active(); got != "blue" {
		t.Fatalf("the page shows %q active, want blue", got)
	}
	// The chart moves: the load's requests show up as it redraws.
	before := chartTotal()
	if err := until(`+document.getElementById("chart").dataset.total > `+strconv.Itoa(before), 15*time.Second); err != nil {
		t.Fatalf("the chart did not move from %d: %v", before, err)
	}

	if err := chromedp.Do(bctx,
		chromedp.SendKeys("#reason", "release 2.0"),
		chromedp.Click("#swap-btn"),
		chromedp.WaitVisible("#confirm-dialog"),
		chromedp.Click("#confirm-ok"),
	); err != nil {
		t.Fatalf("clicking swap and confirm: %v", err)
	}
	if err := until(`document.getElementById("active-slot").textContent === "green"`, 10*time.Second); err != nil {
		t.Fatalf("after confirming the swap the page shows %q active: %v", active(), err)
	}
	st, err := sw.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Active != "green" {
		t.Fatalf("the page shows green but vipswap says %s is active", st.Active)
	}
	// Green's traffic reaches the chart, and the history lists the swap.
	if err := until(`document.getElementById("legend").textContent.match(/green: [1-9]/) !== null`, 15*time.Second); err != nil {
		t.Fatalf("green's traffic is not on the chart: %v", err)
	}
	if err := until(`document.getElementById("history").textContent.includes("blue → green")`, 5*time.Second); err != nil {
		t.Fatalf("the history does not list the swap: %v", err)
	}
	if err := until(`[...document.querySelectorAll("#history td.reason")].some((td) => td.textContent === "release 2.0")`, 5*time.Second); err != nil {
		t.Fatalf("the history does not show the swap's reason: %v", err)
	}
	if err := until(`/ requests?, 0 failed, 0 instance errors \(5xx\), 0 client errors in [0-9.]+ s/.test(document.getElementById("history").textContent)`, 30*time.Second); err != nil {
		t.Fatalf("the history does not show the swap's measurement under the CLI's names: %v", err)
	}
	if err := until(`+document.getElementById("chart").dataset.markers >= 1`, 5*time.Second); err != nil {
		t.Fatalf("the chart has no marker for the swap: %v", err)
	}
	if err := until(`document.getElementById("legend").textContent.includes("p99")`, 5*time.Second); err != nil {
		t.Fatalf("the chart's legend shows no latency: %v", err)
	}

	// Progressive delivery (issue 11, point 6): a shift, a rollout's
	// progress and analysis, a promote and an abort, all from the page.
	confirm := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		actions = append(actions, chromedp.WaitVisible("#confirm-dialog"), chromedp.Click("#confirm-ok"))
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if err := until(`document.querySelectorAll("#shift-slot option").length === 3`, 5*time.Second); err != nil {
		t.Fatalf("the shift control does not list the slots: %v", err)
	}
	confirm("shifting 30% to blue", chromedp.SetValue("#shift-slot", "blue"),
		chromedp.SetValue("#shift-weight", "30"), chromedp.Click("#shift-btn"))
	if err := until(`document.querySelector('[data-listener="prod"]').textContent.includes("green 70%, blue 30%")`, 10*time.Second); err != nil {
		t.Fatalf("after the shift the page does not show green 70%%, blue 30%%: %v", err)
	}
	if st, _ := sw.Client.Status(ctx); st.Listeners[0].Weights["blue"] != 30 {
		t.Fatalf("the page shifted, but vipswap's prod weights are %v", st.Listeners[0].Weights)
	}
	confirm("aborting the manual split", chromedp.Click("#abort-btn"))
	if err := until(`document.querySelector('[data-listener="prod"]').textContent.includes("green 100%")`, 10*time.Second); err != nil {
		t.Fatalf("after the abort the page does not show green 100%%: %v", err)
	}
	pause := true
	if _, err := sw.Client.StartRollout(ctx, wire.RolloutRequest{To: "blue", Steps: []float64{10, 50, 100}, Interval: "1s", Pause: &pause}); err != nil {
		t.Fatal(err)
	}
	if err := until(`document.querySelectorAll("#rollout-progress span").length === 3 && !document.getElementById("rollout-analysis").hidden`, 10*time.Second); err != nil {
		t.Fatalf("the page does not show the rollout's steps and analysis: %v", err)
	}
	if err := until(`!document.getElementById("promote-btn").disabled`, 15*time.Second); err != nil {
		t.Fatalf("the rollout did not pause for a promote on the page: %v", err)
	}
	confirm("promoting", chromedp.Click("#promote-btn"))
	if err := until(`document.querySelector("#rollout-progress span.current").textContent === "50%"`, 10*time.Second); err != nil {
		t.Fatalf("after the promote the page does not show the 50%% step: %v", err)
	}
	if err := until(`document.querySelector('#rollout-analysis tr[data-role="canary"]') !== null && document.getElementById("rollout-verdict").textContent.includes("analysis over")`, 10*time.Second); err != nil {
		t.Fatalf("the page does not show the analysis: %v", err)
	}
	// The analysis table: its columns, the canary, the stable slot, and
	// the watched path's row right under the canary.
	analysis, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`(() => {
		const t = document.getElementById("rollout-analysis");
		return [[...t.tHead.rows[0].cells].map((c) => c.textContent).join("|"),
			[...t.tBodies[0].rows].map((r) => r.dataset.role + ":" + r.cells[0].textContent + ":" + r.cells[2].textContent).join("|")];
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "|slot|requests|errors|error rate|p99|steered, not judged"; analysis[0] != want {
		t.Errorf("the analysis table's columns are %q, want %q", analysis[0], want)
	}
	if rows := strings.Split(analysis[1], "|"); len(rows) != 3 || !strings.HasPrefix(rows[0], "canary:canary:") ||
		!strings.HasPrefix(rows[1], "path:canary /api/:") || !strings.HasPrefix(rows[2], "stable:stable:") {
		t.Errorf("the analysis table's rows are %q, want the canary, its path /api/ under it, then the stable slot", analysis[1])
	}
	screenshot(t, bctx, "dashboard-rollout.png", 1280)
	screenshot(t, bctx, "dashboard-rollout-800.png", 800)
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 1000)); err != nil {
		t.Fatal(err)
	}
	confirm("aborting the rollout", chromedp.Click("#abort-btn"))
	if err := until(`document.getElementById("rollout-state").textContent === "none running" && document.querySelector('[data-listener="prod"]').textContent.includes("green 100%")`, 10*time.Second); err != nil {
		t.Fatalf("after the abort the page still shows a rollout: %v", err)
	}
	if r, _ := sw.Client.Rollout(ctx); r.Running || r.Weights["green"] != 100 {
		t.Fatalf("after the abort vipswap says running %v, weights %v", r.Running, r.Weights)
	}

	// Releases (issue 15): the page shows the newest with its steps as
	// they end, and the older ones one line each.
	if err := until(`document.getElementById("release-card").hidden`, 5*time.Second); err != nil {
		t.Fatalf("the page shows a release before any ran: %v", err)
	}
	for _, version := range []string{"1.1", "1.2"} {
		p, err := sw.Client.Rolling(ctx, wire.RollingRequest{Slot: "blue", Version: version})
		if err != nil {
			t.Fatal(err)
		}
		newest := `document.querySelector("#releases details[data-release]")`
		if err := until(newest+` && `+newest+`.dataset.release === "`+p.ID+`" && `+newest+`.open && `+
			newest+`.querySelector("summary").textContent.includes("rolling") && `+newest+`.querySelector("summary").textContent.includes("succeeded") && `+
			newest+`.querySelectorAll(".steps li.step-ok").length === 9`, 30*time.Second); err != nil {
			t.Fatalf("the page does not show rolling update %s (%s) with its steps: %v", p.ID, version, err)
		}
	}
	// The older release is one closed line that opens on a click.
	older := `document.querySelectorAll("#releases details[data-release]")[1]`
	if err := until(older+` && !`+older+`.open && `+older+`.querySelector("summary").textContent.includes("v1.1")`, 5*time.Second); err != nil {
		t.Fatalf("the page does not show the older release as a closed line: %v", err)
	}
	if err := chromedp.Do(bctx, chromedp.Click(`#releases details[data-release]:nth-child(2) summary`)); err != nil {
		t.Fatal(err)
	}
	if err := until(older+`.open && `+older+`.querySelectorAll(".steps li.step-ok").length === 9`, 5*time.Second); err != nil {
		t.Fatalf("clicking the older release does not show its steps: %v", err)
	}
	// It stays open across the page's refreshes (the live clock ticks).
	live, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById("live").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if err := until(`document.getElementById("live").textContent !== `+strconv.Quote(live), 5*time.Second); err != nil {
		t.Fatalf("the page stopped refreshing: %v", err)
	}
	if err := until(older+`.open`, time.Second); err != nil {
		t.Errorf("the older release the test opened closed again as the page refreshed: %v", err)
	}
	// And closes on a second click, back to one line.
	if err := chromedp.Do(bctx, chromedp.Click(`#releases details[data-release]:nth-child(2) summary`)); err != nil {
		t.Fatal(err)
	}
	if err := until(`!`+older+`.open`, 5*time.Second); err != nil {
		t.Fatalf("a second click does not close the older release: %v", err)
	}

	// Swaps seconds apart, as vipswap verify --swap-every 1s makes them:
	// their markers must not smear into each other.
	for i := range 6 {
		if _, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: "swap burst " + strconv.Itoa(i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := until(`[...document.querySelectorAll("#history td.reason")].some((td) => td.textContent === "swap burst 6")`, 10*time.Second); err != nil {
		t.Fatalf("the history does not show the burst of swaps: %v", err)
	}
	layout := func(width int64) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.EmulateViewport(width, 1000)); err != nil {
			t.Fatal(err)
		}
		// Wait for a redraw at this width with the burst's markers on it.
		if err := until(`document.getElementById("chart").dataset.width === String(document.getElementById("chart").clientWidth) && +document.getElementById("chart").dataset.markers >= 7`, 10*time.Second); err != nil {
			t.Fatalf("at %d px the chart was not redrawn with the swaps' markers: %v", width, err)
		}
		problems, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](layoutCheck))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("at %d px wide: %s", width, p)
		}
	}
	layout(1280)
	// The labels' grouping on its own, in the page, with changes placed
	// at will on a 600 px chart: ten a pixel or two apart share a label,
	// one far from them keeps its own, and the last two, near the right
	// edge where a label is pushed left to stay inside, share one.
	groups, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`groupMarkers(
		[...Array(10).keys()].map((i) => ({ x: 100 + 2 * i, e: { id: i + 1, operation: "swap" } })).concat(
		[{ x: 400, e: { id: 11, operation: "rollback" } }, { x: 560, e: { id: 12, operation: "swap" } }, { x: 598, e: { id: 13, operation: "swap" } }]), 600)
		.map((g, i, all) => g.text + (i > 0 && g.left < all[i - 1].right ? " (overlaps)" : "") + (g.right > 600 ? " (sticks out)" : ""))`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(groups, ", "), "10 changes, #11 rollback, 2 changes"; got != want {
		t.Errorf("the marker labels of changes at chosen places are %q, want %q", got, want)
	}
	screenshot(t, bctx, "dashboard.png", 1280)
	layout(800)
	screenshot(t, bctx, "dashboard-800.png", 800)

	// A shadow shows in its card, with its figures, and stops from it.
	standby := map[string]string{"blue": "green", "green": "blue"}[active()]
	if _, err := sw.Client.StartShadow(ctx, wire.ShadowRequest{To: standby, Percent: 100}); err != nil {
		t.Fatal(err)
	}
	if err := until(`!document.getElementById("shadow-card").hidden && document.getElementById("shadow-state").textContent.includes("copied to `+standby+`") && /^\d+ same, \d+ differ/.test(document.getElementById("shadow-figures").textContent)`, 10*time.Second); err != nil {
		t.Fatalf("the page does not show the shadow to %s with its figures: %v", standby, err)
	}
	// The button is clicked by the page's own script, and the whole is
	// bounded: a wait for a node that never turns clickable would hold
	// the test until go test's timeout.
	stopCtx, cancelStop := context.WithTimeout(bctx, max(30*time.Second, vstest.MinWait))
	defer cancelStop()
	_, err = chromedp.Run(stopCtx, chromedp.Evaluate[bool](`document.getElementById("shadow-stop-btn").click(), true`))
	if err == nil {
		err = chromedp.Do(stopCtx, chromedp.WaitVisible("#confirm-dialog"), chromedp.Click("#confirm-ok"))
	}
	if err != nil {
		st, _ := sw.Client.Status(ctx)
		t.Fatalf("clicking stop the shadow and confirm: %v (vipswap's shadow: %+v)", err, st.Shadow)
	}
	if err := until(`document.getElementById("shadow-card").hidden`, 10*time.Second); err != nil {
		t.Fatalf("the shadow card is still shown after its stop: %v", err)
	}
	if st, err := sw.Client.Status(ctx); err != nil || st.Shadow != nil {
		t.Fatalf("after the page's stop vipswap says shadow %+v (%v), want none", st.Shadow, err)
	}
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("%d requests failed across the swaps: %v", res.Failed, res.Errors)
	}
}

// layoutCheck is JavaScript that lists what reads badly on the dashboard:
// change-marker labels that overlap or stick out of the chart (and markers
// no label accounts for), a latency with more digits than the page's
// rounding gives, a history time or an older release's line on more than
// one line, an instance's button outside its slot's card, fewer than two
// releases, and anything wider than the window.
const layoutCheck = `(() => {
	const bad = [];
	const box = (e) => e.getBoundingClientRect();
	const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

	const chart = box(document.getElementById("chart"));
	const labels = [...document.querySelectorAll("#markers .marker")];
	if (labels.length === 0) bad.push("no change-marker labels on the chart");
	let counted = 0;
	labels.forEach((a, i) => {
		const ra = box(a);
		counted += +a.dataset.count;
		if (ra.left < chart.left - 0.5 || ra.right > chart.right + 0.5) bad.push("marker label " + JSON.stringify(a.textContent) + " sticks out of the chart");
		if (+a.dataset.count > 1 && a.title.split("\n").length !== +a.dataset.count) bad.push("marker label " + JSON.stringify(a.textContent) + " does not list its " + a.dataset.count + " changes in its tooltip");
		for (const b of labels.slice(i + 1)) {
			if (overlap(ra, box(b))) bad.push("marker labels " + JSON.stringify(a.textContent) + " and " + JSON.stringify(b.textContent) + " overlap");
		}
	});
	const markers = +document.getElementById("chart").dataset.markers;
	if (labels.length && counted !== markers) bad.push("the marker labels account for " + counted + " changes, the chart draws " + markers);
	if (!labels.some((l) => +l.dataset.count > 1)) bad.push("no marker label merges the swaps seconds apart: " + labels.map((l) => l.textContent).join(", "));

	// Latencies: under 1 ms whole µs, under 10 ms one decimal, whole ms
	// up to a second, then seconds with three digits (a whole number of
	// ms is never too long: the release steps' waits read "after 1ms").
	const text = document.body.innerText;
	const ok = /^(?:\d{1,3}\s?(?:µs|ms)|\d\.\d ms|\d\.\d\d s|\d\d\.\d s|\d+ s)$/;
	for (const m of text.matchAll(/\d+(?:\.\d+)?\s?(?:µs|ms)\b/g)) if (!ok.test(m[0])) bad.push("latency " + JSON.stringify(m[0]) + " is not rounded");
	for (const m of text.matchAll(/\bp(?:50|99)\s+(?:≤\s+)?(\d+(?:\.\d+)?\s?(?:µs|ms|s)\b)/g)) if (!ok.test(m[1])) bad.push("latency " + JSON.stringify(m[0]) + " is not rounded");
	if (!/p99 \S/.test(text)) bad.push("the page shows no latency at all");

	// History: the time on one line, as high as the one-line # cell.
	const height = (node) => { const r = document.createRange(); r.selectNodeContents(node); return r.getBoundingClientRect().height; };
	const rows = [...document.querySelectorAll("#history tr")];
	if (rows.length < 10) bad.push("the history shows " + rows.length + " entries");
	for (const tr of rows) {
		const one = height(tr.cells[0]), t = height(tr.cells[1]);
		if (t > one + 1) bad.push("history entry " + tr.cells[0].textContent + "'s time " + JSON.stringify(tr.cells[1].textContent) + " is " + t + " px high, one line is " + one);
	}
	const hist = document.querySelector("table.history");
	if (box(hist).right > box(hist.closest(".card")).right + 0.5) bad.push("the history table is wider than its card");

	// Instances: each button inside its slot's card.
	const buttons = [...document.querySelectorAll("[data-instance] button")];
	if (buttons.length < 5) bad.push("only " + buttons.length + " instance buttons");
	for (const b of buttons) {
		const rb = box(b), rc = box(b.closest(".card"));
		if (rb.left < rc.left || rb.right > rc.right || rb.top < rc.top || rb.bottom > rc.bottom) bad.push("the " + b.textContent + " button of " + b.closest("tr").dataset.instance + " lies outside its card");
	}

	// Releases: more than one, the older ones one line each when closed.
	const releases = [...document.querySelectorAll("#releases details[data-release]")];
	if (releases.length < 2) bad.push(releases.length + " release entries, want the recent ones");
	for (const d of releases.slice(1)) {
		const s = d.querySelector("summary");
		const lh = parseFloat(getComputedStyle(s).lineHeight);
		if (box(s).height > 1.5 * lh) bad.push("release " + d.dataset.release + "'s line " + JSON.stringify(s.textContent) + " takes more than one line");
	}

	if (document.documentElement.scrollWidth > window.innerWidth) bad.push("the page is " + document.documentElement.scrollWidth + " px wide in a " + window.innerWidth + " px window");
	return bad;
})()`

// screenshot sets the browser's width, takes a full-page PNG and writes it
// to $VIPSWAP_ARTIFACTS (or a temporary directory) under name.
func screenshot(t *testing.T, bctx context.Context, name string, width int64) {
	t.Helper()
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(width, 1000)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100 means PNG
	if err != nil {
		t.Fatal(err)
	}
	out := os.Getenv("VIPSWAP_ARTIFACTS")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(out, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// refusedAddr returns an address on which nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
