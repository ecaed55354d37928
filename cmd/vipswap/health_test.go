package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// TestDownSaysWhy (issue 16, point 1): an instance answering 404, one
// refusing connections and one that never answers are down for their own
// reason, and status --json, /metrics and the log each say which.
func TestDownSaysWhy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := vstest.StartApp(t, "blue", "127.0.0.1:0")
	other := vstest.StartApp(t, "green", "127.0.0.1:0") // answers 404 for blue
	green := vstest.StartApp(t, "green", "127.0.0.1:0")
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { silent.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { io.Copy(io.Discard, c); c.Close() })
		}
	})
	blue := []string{good.Addr, other.Addr, refused, silent.Addr().String()}
	cfg := strings.Replace(testConfig(dir, staticSlots(map[string][]string{"blue": blue, "green": {green.Addr}})),
		"timeout: 5s", "timeout: 300ms", 1)
	sw := switchtest.Serve(t, dir, cfg)

	want := map[string]string{
		other.Addr:             "L7STS 404",
		refused:                "L4CON connection refused",
		silent.Addr().String(): "L7TOUT no answer within 300ms",
		good.Addr:              "L7OK 200",
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		code, out := cli(t, sw, "status", "--json")
		if code != 0 {
			return fmt.Errorf("status --json exited %d: %s", code, out)
		}
		var st wire.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		for _, i := range st.Slots[0].Instances {
			if i.Check == nil || i.Check.Text != want[i.Addr] || i.Healthy != (i.Addr == good.Addr) {
				return fmt.Errorf("instance %s: healthy %v, check %+v; want %q", i.Addr, i.Healthy, i.Check, want[i.Addr])
			}
		}
		return nil
	})
	code, out := cli(t, sw, "status")
	if code != 0 || !strings.Contains(out, "down: L7STS 404 for") || !strings.Contains(out, "down: L4CON connection refused") {
		t.Fatalf("status:\n%s", out)
	}

	families := scrape(t, sw.Admin)
	for addr, text := range want {
		code := strings.Fields(text)[0]
		if v, ok := metric(families, "vipswap_instance_last_check", map[string]string{"slot": "blue", "instance": addr, "code": code}); !ok || v != 1 {
			t.Errorf("vipswap_instance_last_check for %s code %s: %v %v", addr, code, v, ok)
		}
	}
	for _, code := range []string{"L7OK", "L7STS", "L4CON", "L7TOUT"} {
		if v, ok := metric(families, "vipswap_health_checks_total", map[string]string{"code": code}); !ok || v < 1 {
			t.Errorf("vipswap_health_checks_total{code=%q} = %v, %v", code, v, ok)
		}
	}
	for addr, text := range want {
		if addr == good.Addr {
			continue
		}
		line := fmt.Sprintf(`instance=%s healthy=false check="%s"`, addr, text)
		if !strings.Contains(sw.Output(), line) {
			t.Errorf("the log does not say %s", line)
		}
	}
}
