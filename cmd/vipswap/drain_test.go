package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
)

type answer struct {
	status int
	slot   string
	err    error
}

func getSlot(c *http.Client, url string) answer {
	resp, err := c.Get(url)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	var a struct{ Slot string }
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		err = json.Unmarshal(body, &a)
	}
	return answer{status: resp.StatusCode, slot: a.Slot, err: err}
}

// longRequests starts n GETs that each take d on the instance.
func longRequests(url string, n int, d time.Duration) (wait func() []answer) {
	var wg sync.WaitGroup
	answers := make([]answer, n)
	for i := range n {
		wg.Go(func() { answers[i] = getSlot(http.DefaultClient, fmt.Sprintf("%s/api/test?delay=%s", url, d)) })
	}
	return func() []answer { wg.Wait(); return answers }
}

func waitInFlight(t *testing.T, sw *switchtest.Switch, slot string, n int64) {
	t.Helper()
	vstest.WaitFor(t, 15*time.Second, func() error {
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			return err
		}
		for _, s := range st.Slots {
			if s.Name == slot && s.InFlight.Prod == n {
				return nil
			}
		}
		return fmt.Errorf("slot %s has not %d requests in flight", slot, n)
	})
}

// TestDrainAcrossSwap: 10-second requests in flight on the old slot when a
// swap happens all finish with 200 from the old slot, new requests land on
// the new slot, an idle keep-alive connection survives the swap, and
// "swap --wait" returns once the old slot has drained.
func TestDrainAcrossSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sw := switchtest.Serve(t, dir, testConfig(dir, managedSlots))
	sw.WaitHealthy(t)

	// An idle keep-alive connection opened before the swap.
	keep := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
	if a := getSlot(keep, sw.Prod+"/api/test"); a.status != 200 || a.slot != "blue" {
		t.Fatalf("before swap: %+v", a)
	}

	const hold = 10 * time.Second
	launched := time.Now()
	wait := longRequests(sw.Prod, 8, hold)
	waitInFlight(t, sw, "blue", 8)
	swap := vstest.Start(t, vstest.Binary(t), "swap", "--wait", "--timeout", "60s", "--admin", sw.Admin)
	vstest.WaitFor(t, 15*time.Second, func() error {
		if got := sw.Active(t); got != "green" {
			return fmt.Errorf("active is %s", got)
		}
		return nil
	})
	switched := time.Now() // the swap applied before this

	for i := range 20 {
		if a := getSlot(http.DefaultClient, sw.Prod+"/api/test"); a.status != 200 || a.slot != "green" {
			t.Fatalf("new request %d after swap: %+v, want 200 from green", i, a)
		}
	}
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", sw.Prod+"/api/test", nil)
	resp, err := keep.Do(req)
	if err != nil {
		t.Fatalf("idle keep-alive connection after swap: %v", err)
	}
	resp.Body.Close()
	if !reused || resp.StatusCode != 200 {
		t.Fatalf("keep-alive connection reused=%v status=%d; want the old connection to keep working", reused, resp.StatusCode)
	}

	for i, a := range wait() {
		if a.err != nil || a.status != 200 || a.slot != "blue" {
			t.Errorf("long request %d: %+v, want 200 from blue", i, a)
		}
	}
	if code := swap.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("swap --wait exited %d:\n%s", code, swap.Output())
	}
	out := swap.Output()
	measured := regexp.MustCompile(`swapped blue→green: ([0-9,]+) requests? on prod in the [0-9.]+ s around the switch, 0 failed, [0-9,]+ instance errors? \(5xx\), [0-9,]+ client errors?; drained in ([0-9.]+) s`).FindStringSubmatch(out)
	if !strings.Contains(out, "swapped blue -> green") || measured == nil {
		t.Fatalf("swap --wait printed %q; want the swap and its measurement", out)
	}
	// The requests end no sooner than hold after they were sent, the
	// swap applied before we saw it: the drain lasted at least the
	// difference (whatever the swap took to apply on a busy machine).
	least := (launched.Add(hold).Sub(switched) - 100*time.Millisecond).Seconds()
	if secs, _ := strconv.ParseFloat(measured[2], 64); secs < least {
		t.Fatalf("swap --wait printed %q; want the swap and its measurement with a drain of at least %.1f s (the requests' %s)", out, least, hold)
	}
	t.Logf("drained in %s s (at least %.1f s: requests of %s)", measured[2], least, hold)
	if !strings.Contains(out, "draining blue: 8 requests in flight") {
		t.Errorf("swap --wait showed no progress: %q", out)
	}
}

// TestShutdownFinishesInFlight: on SIGTERM vipswap stops accepting, finishes
// requests in flight, stops its managed instances and exits 0.
func TestShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sw := switchtest.Serve(t, dir, testConfig(dir, managedSlots))
	sw.WaitHealthy(t)
	st, err := sw.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wait := longRequests(sw.Prod, 4, 2*time.Second)
	waitInFlight(t, sw, "blue", 4)
	sw.Signal(t, syscall.SIGTERM)
	for i, a := range wait() {
		if a.err != nil || a.status != 200 {
			t.Errorf("request %d in flight at SIGTERM: %+v, want 200", i, a)
		}
	}
	if code := sw.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("vipswap exited %d, want 0", code)
	}
	for _, s := range st.Slots {
		for _, i := range s.Instances {
			if _, err := http.Get("http://" + i.Addr + "/api/ping"); err == nil {
				t.Errorf("managed instance %s still answers after vipswap exited", i.Addr)
			}
		}
	}
	if _, err := http.Get(sw.Prod); err == nil {
		t.Error("prod still accepts connections after vipswap exited")
	}
}
