package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest/switchtest"
)

// TestSilentConnectionsCannotStarveVipswap (issue 9, point 2): more silent
// connections than vipswap has descriptors. The listener stops accepting at
// its limit instead of running out of descriptors, so the admin API
// answers, probes keep every instance healthy, an established keep-alive
// client is still served, and the silent connections are closed after
// idle_timeout, as idle keep-alive ones are (to an HTTP client, a
// connection it dialed and has not used yet is one).
func TestSilentConnectionsCannotStarveVipswap(t *testing.T) {
	dir := t.TempDir()
	_, addrs := startStatic(t, 2)
	cfg := testConfig(dir, staticSlots(addrs)) + "proxy:\n  read_header_timeout: 2s\n  idle_timeout: 4s\n"
	sw := switchtest.ServeLimited(t, dir, cfg, 256)
	sw.WaitHealthy(t)
	if !strings.Contains(sw.Output(), "max_connections_per_listener=38") {
		t.Fatalf("the limit was not derived from 256 descriptors:\n%s", sw.Output())
	}

	established := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}, Timeout: 10 * time.Second}
	defer established.CloseIdleConnections()
	get := func() error {
		resp, err := established.Get(sw.Prod + "/api/test")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}

	// The flood: 300 connections that never send a byte.
	prodAddr := strings.TrimPrefix(sw.Prod, "http://")
	flooded := time.Now()
	var silent []net.Conn
	for range 300 {
		c, err := net.DialTimeout("tcp", prodAddr, 5*time.Second)
		if err != nil {
			break // the listen queue is full too: enough
		}
		silent = append(silent, c)
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	if len(silent) < 100 {
		t.Fatalf("only %d silent connections opened", len(silent))
	}

	// While they sit there: the admin API answers, instances stay healthy
	// over many probe rounds, the established client gets its answers.
	deadline := time.Now().Add(2 * time.Second) // many probe rounds (every 100ms)
	for i := 0; time.Now().Before(deadline); i++ {
		// Only ends a hung call: a starved admin API never answers.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := sw.Client.Status(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: admin API: %v", i, err)
		}
		for _, slot := range st.Slots {
			for _, inst := range slot.Instances {
				if !inst.Healthy {
					t.Fatalf("round %d: instance %s of %s marked down", i, inst.Addr, slot.Name)
				}
			}
		}
		if err := get(); err != nil {
			t.Fatalf("round %d: the established client: %v", i, err)
		}
	}

	// One address cannot take the whole listener: beyond its cap (half
	// the limit of 38) its connections were closed at once, counted and
	// logged.
	if v, _ := metric(scrape(t, sw.Admin), "vipswap_client_connections_refused_total", map[string]string{"listener": "prod"}); v == 0 {
		t.Error("no connection of the flood was refused by the per-client cap")
	}
	if !strings.Contains(sw.Output(), "max_connections_per_client=19") || !strings.Contains(sw.Output(), "refused a connection from 127.0.0.1") {
		t.Errorf("the log does not show the per-client cap at work:\n%s", sw.Output())
	}

	// The first silent connection was accepted and is closed after
	// idle_timeout (4s), not before, long before our deadline.
	silent[0].SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := silent[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent connection got bytes")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the silent connection stayed open %s", time.Since(flooded))
	}
	if took := time.Since(flooded); took < 4*time.Second {
		t.Fatalf("a silent connection was closed %s after it was opened, before idle_timeout (4s)", took.Round(time.Millisecond))
	}
	t.Logf("a silent connection was closed %s after it was opened (idle_timeout 4s)", time.Since(flooded).Round(time.Millisecond))

	// A flood of the admin API cannot take the descriptors the data plane
	// needs either: it gets a small share of the reserve.
	adminAddr := strings.TrimPrefix(sw.Admin, "http://")
	for range 300 {
		c, err := net.DialTimeout("tcp", adminAddr, 5*time.Second)
		if err != nil {
			break
		}
		silent = append(silent, c)
	}
	for i := range 50 {
		if err := get(); err != nil {
			t.Fatalf("request %d during the admin flood: %v", i, err)
		}
	}
	if strings.Contains(sw.Output(), "too many open files") {
		t.Fatalf("vipswap ran out of descriptors:\n%s", sw.Output())
	}
}
