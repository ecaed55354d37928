package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// reloads returns the reloads in the history, newest first.
func reloads(t *testing.T, sw *switchtest.Switch) []wire.HistoryEntry {
	t.Helper()
	h, err := sw.Client.History(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.HistoryEntry
	for _, e := range h {
		if e.Operation == "reload" {
			out = append(out, e)
		}
	}
	return out
}

// TestReloadRefusesToEmptyProd: a reload that leaves the active slot
// without a routable instance (a port typo; new addresses not probed yet)
// is refused, by SIGHUP (one log line naming the slot) and by vipswap
// reload (dry run included), and prod keeps answering: 0 failed requests.
// Adding the new instance first and removing the old one in a second
// reload goes through; --force applies the typo.
func TestReloadRefusesToEmptyProd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 4, time.Minute)
	waitServed(t, load, 100)

	typo := testConfig(dir, staticSlots(map[string][]string{"blue": {refusedAddr(t)}, "green": addrs["green"]}))
	writeConfig(t, dir, typo)
	sw.Signal(t, syscall.SIGHUP)
	sw.WaitLine(t, regexp.MustCompile(`level=WARN msg="reload refused; the configuration in force is unchanged" actor=SIGHUP reason="reload refused: slots.blue takes prod traffic`), 30*time.Second)
	code, out := cli(t, sw, "reload", "--dry-run")
	if code != 1 || !strings.Contains(out, "would be refused: slots.blue takes prod traffic") {
		t.Fatalf("reload --dry-run of a file that empties prod: exit %d:\n%s", code, out)
	}
	code, out = cli(t, sw, "reload", "--reason", "typo")
	if code != 1 || !strings.Contains(out, "slots.blue takes prod traffic (active, 100% of prod) and the new configuration keeps none of its 1 routable instances") {
		t.Fatalf("reload of a file that empties prod: exit %d:\n%s", code, out)
	}
	if got := members(t, sw)["blue"]; !slices.Equal(got, addrs["blue"]) {
		t.Fatalf("a refused reload changed blue to %v", got)
	}
	waitServed(t, load, load.OK()+200)

	// New addresses that answer: the same, until one of them is probed.
	next := vstest.StartApp(t, "blue", "127.0.0.1:0")
	writeConfig(t, dir, testConfig(dir, staticSlots(map[string][]string{"blue": {next.Addr}, "green": addrs["green"]})))
	if code, out := cli(t, sw, "reload"); code != 1 || !strings.Contains(out, "slots.blue takes prod traffic") {
		t.Fatalf("reload replacing every instance of prod: exit %d:\n%s", code, out)
	}
	writeConfig(t, dir, testConfig(dir, staticSlots(map[string][]string{"blue": {addrs["blue"][0], next.Addr}, "green": addrs["green"]})))
	if code, out := cli(t, sw, "reload"); code != 0 {
		t.Fatalf("reload adding an instance: exit %d:\n%s", code, out)
	}
	waitInstance(t, sw, next.Addr, true)
	writeConfig(t, dir, testConfig(dir, staticSlots(map[string][]string{"blue": {next.Addr}, "green": addrs["green"]})))
	if code, out := cli(t, sw, "reload"); code != 0 {
		t.Fatalf("reload removing the old instance once the new one is healthy: exit %d:\n%s", code, out)
	}
	waitServed(t, load, load.OK()+200)
	res := load.Stop()
	t.Logf("%d requests ok, %d failed", res.OK, res.Failed)
	if res.Failed != 0 {
		t.Fatalf("%d requests failed, want 0; first: %v", res.Failed, res.Errors)
	}

	// Forced, the typo applies (and prod has nothing left to answer with).
	writeConfig(t, dir, typo)
	code, out = cli(t, sw, "reload", "--force", "--reason", "on purpose")
	if code != 0 || !strings.Contains(out, "warning: slots.blue takes traffic and keeps none") {
		t.Fatalf("reload --force: exit %d:\n%s", code, out)
	}
	var got []string
	for _, e := range reloads(t, sw)[:6] {
		got = append(got, fmt.Sprintf("%s %s forced=%v", e.Actor, e.Result, e.Forced))
	}
	want := []string{"local applied forced=true", "local applied forced=false", "local applied forced=false", "local refused forced=false", "local refused forced=false", "SIGHUP refused forced=false"}
	if !slices.Equal(got, want) {
		t.Fatalf("reloads in the history (newest first): %q, want %q", got, want)
	}
}

// TestSIGHUPDuringInPlaceWrites: while the configuration file is rewritten
// in place (truncated, then written in pieces, each prefix up to a line
// end a valid configuration with fewer instances), SIGHUP reloads only
// ever apply one of the complete files: every applied reload changes
// nothing but the line the two complete files differ in, and every
// refused one was refused because the file was changing. Prod answers
// throughout.
func TestSIGHUPDuringInPlaceWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	blue := vstest.StartApp(t, "blue", "127.0.0.1:0")
	var green []string
	for range 3 {
		green = append(green, vstest.StartApp(t, "green", "127.0.0.1:0").Addr)
	}
	slots := "slots:\n  blue:\n    instances: [" + blue.Addr + "]\n  green:\n    instances:\n"
	for _, g := range green {
		slots += "      - " + g + "\n"
	}
	file := func(interval string) string {
		return strings.Replace(testConfig(dir, slots), "interval: 100ms", "interval: "+interval, 1)
	}
	files := []string{file("100ms"), file("150ms")}
	allowed := []string{"health.interval: 100ms → 150ms", "health.interval: 150ms → 100ms"}
	// The pieces: half the head (not a valid file), up to the first green
	// instance, then one line at a time.
	pieces := func(f string) []string {
		at := strings.Index(f, "      - ")
		out := []string{f[:at/2], f[at/2 : at]}
		for _, l := range strings.SplitAfter(f[at:], "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	sw := switchtest.Serve(t, dir, files[0])
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 4, time.Minute)
	waitServed(t, load, 100)

	// The writer: rewrites the file in place every few milliseconds, one
	// piece a millisecond (a slow writer), and now and then leaves a
	// complete file still for a while (400 ms), long enough to be read.
	path := filepath.Join(dir, "vipswap.yaml")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		vstest.RewriteInPlace(t, path, func(i int) []string { return pieces(files[i%2]) }, stop)
	})
	// SIGHUP reloads, one after the other, for a few seconds.
	deadline := time.Now().Add(4 * time.Second)
	sent := 0
	for time.Now().Before(deadline) {
		n := len(reloads(t, sw))
		sw.Signal(t, syscall.SIGHUP)
		sent++
		vstest.WaitFor(t, 30*time.Second, func() error {
			if len(reloads(t, sw)) <= n {
				return fmt.Errorf("the reload on SIGHUP %d is not in the history", sent)
			}
			return nil
		})
	}
	close(stop)
	wg.Wait()
	// The writer stopped after a complete file: a last reload applies it.
	n := len(reloads(t, sw))
	sw.Signal(t, syscall.SIGHUP)
	vstest.WaitFor(t, 30*time.Second, func() error {
		if r := reloads(t, sw); len(r) <= n || r[0].Result != "applied" {
			return fmt.Errorf("no applied reload after the writer stopped")
		}
		return nil
	})
	waitServed(t, load, load.OK()+100)
	res := load.Stop()

	applied, refused := 0, map[string]int{}
	for _, e := range reloads(t, sw) {
		if e.Result != "applied" {
			// A partial file read as complete is refused when it does not
			// parse: the snapshot read failed all the same.
			if !strings.Contains(e.Error, "the file changed while it was read") {
				t.Errorf("reload %d was refused for another reason than a changing file: a partial file was read as complete: %s", e.ID, e.Error)
			}
			reason, _, _ := strings.Cut(e.Error, " (")
			refused[reason]++
			continue
		}
		applied++
		for _, c := range e.Changes {
			if !slices.Contains(allowed, c) {
				t.Errorf("reload %d applied a partial file: it changed %q (all its changes: %q)", e.ID, c, e.Changes)
			}
		}
	}
	t.Logf("%d SIGHUPs: %d reloads applied, refused: %v; prod: %d requests ok, %d failed", sent+1, applied, refused, res.OK, res.Failed)
	if got := members(t, sw); !slices.Equal(got["blue"], []string{blue.Addr}) || !slices.Equal(got["green"], green) {
		t.Errorf("in force: %v, want blue %v and green %v", got, blue.Addr, green)
	}
	if res.Failed != 0 {
		t.Fatalf("%d prod requests failed, want 0; first: %v", res.Failed, res.Errors)
	}
}
