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

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
)

// TestDashboardInBrowser opens the dashboard in headless Chromium, reads the
// active slot, clicks Swap and confirms, and sees the active slot change and
// the chart move; it saves a screenshot in $VIPSWAP_ARTIFACTS (the test
// script sets it; docs/dashboard.png is one).
func TestDashboardInBrowser(t *testing.T) {
	dir := t.TempDir()
	// Versions on the slots, and a third slot whose one instance refuses
	// connections: the page must say what runs where and why it is down.
	slots := strings.Replace(strings.Replace(managedSlots, "  blue:\n", "  blue:\n    version: \"1.0\"\n", 1),
		"  green:\n", "  green:\n    version: \"2.0\"\n", 1) + "  red:\n    instances: [" + refusedAddr(t) + "]\n"
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
	bctx := newBrowser(t, 90*time.Second)

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
	// until waits for a JavaScript condition to hold on the page.
	until := func(cond string, timeout time.Duration) error {
		_, err := chromedp.Run(bctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(timeout)))
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
	if _, err := sw.Client.StartRollout(ctx, api.RolloutRequest{To: "blue", Steps: []float64{10, 50, 100}, Interval: "1s", Pause: &pause}); err != nil {
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
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	confirm("aborting the rollout", chromedp.Click("#abort-btn"))
	if err := until(`document.getElementById("rollout-state").textContent === "none running" && document.querySelector('[data-listener="prod"]').textContent.includes("green 100%")`, 10*time.Second); err != nil {
		t.Fatalf("after the abort the page still shows a rollout: %v", err)
	}
	if r, _ := sw.Client.Rollout(ctx); r.Running || r.Weights["green"] != 100 {
		t.Fatalf("after the abort vipswap says running %v, weights %v", r.Running, r.Weights)
	}

	// A release (issue 15): the page shows its steps as they end.
	if err := until(`document.getElementById("release-card").hidden`, 5*time.Second); err != nil {
		t.Fatalf("the page shows a release before any ran: %v", err)
	}
	if _, err := sw.Client.Rolling(ctx, api.RollingRequest{Slot: "blue", Version: "1.1"}); err != nil {
		t.Fatal(err)
	}
	if err := until(`!document.getElementById("release-card").hidden && document.getElementById("release-state").textContent.includes("rolling") && document.getElementById("release-state").textContent.includes("succeeded") && document.querySelectorAll("#release-steps li.step-ok").length === 9`, 30*time.Second); err != nil {
		t.Fatalf("the page does not show the rolling update's steps: %v", err)
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
	path := filepath.Join(out, "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	if err := os.WriteFile(filepath.Join(out, "dashboard-rollout.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("%d requests failed across the swap: %v", res.Failed, res.Errors)
	}
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
