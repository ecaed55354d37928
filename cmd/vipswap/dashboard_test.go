package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/vipswap/vipswap/internal/vstest"
)

// TestDashboardInBrowser opens the dashboard in headless Chromium, reads the
// active slot, clicks Swap and confirms, and sees the active slot change and
// the chart move; it saves a screenshot in $VIPSWAP_ARTIFACTS (the test
// script sets it; docs/dashboard.png is one).
func TestDashboardInBrowser(t *testing.T) {
	dir := t.TempDir()
	sw := vstest.Serve(t, dir, testConfig(dir, managedSlots))
	sw.WaitHealthy(t)
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
	if err := until(`document.querySelectorAll("[data-instance]").length === 4`, 20*time.Second); err != nil {
		t.Fatalf("the page did not show the four instances: %v", err)
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
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("%d requests failed across the swap: %v", res.Failed, res.Errors)
	}
}
