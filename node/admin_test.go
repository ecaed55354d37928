package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/proxy"
)

// TestEventWaitersLeaveAdminConnections: requests waiting in GET
// /v1/events never take every connection the admin API serves, so a
// status read or a swap is answered while they wait, however few
// descriptors the node has (on a system where vipswap cannot tell, it
// serves 8 admin connections).
func TestEventWaitersLeaveAdminConnections(t *testing.T) {
	defer func(f func() int) { descriptorLimit = f }(descriptorLimit)
	descriptorLimit = func() int { return 0 }
	conns := adminConns(proxy.BudgetFor(0))
	dir := t.TempDir()
	path := writeConfig(t, dir, staticSlot("blue", instance(t, "blue")), staticSlot("green", instance(t, "green")))
	n, _ := startNode(t, path)
	base := "http://" + n.adminLn.Addr().String()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wrote, done sync.WaitGroup
	answered := make(chan int, conns) // the waiters' statuses, as they come
	for range conns {
		wrote.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			var once sync.Once
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(wrote.Done) }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", base+"/v1/events?wait=25s", nil)
			resp, err := hc.Do(req)
			once.Do(wrote.Done)
			if err != nil {
				return // the test ended
			}
			resp.Body.Close()
			answered <- resp.StatusCode
		}()
	}
	wrote.Wait() // every waiter has connected and asked

	status := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/status", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
		}
		status <- err
	}()
	// Until one waiter is refused (at once, with the fix) or every one's
	// wait ended (25 s, without).
	deadline := time.After(time.Minute) // ends a hang only
	var waited, refused int
	for refused == 0 && waited < conns {
		select {
		case code := <-answered:
			if code == http.StatusServiceUnavailable {
				refused++
			} else {
				waited++
			}
		case <-deadline:
			t.Fatalf("%d event waiters neither answered nor refused", conns)
		}
	}
	if refused == 0 {
		t.Errorf("all %d event waiters were let wait, on %d admin connections: none was left for a status read or a swap", conns, conns)
	}
	select {
	case err := <-status:
		if err != nil {
			t.Errorf("status while requests wait for events: %v", err)
		}
	case <-deadline:
		t.Errorf("status was not answered while %d requests wait for events", conns)
	}
	cancel()
	done.Wait()
}

// TestShutdownAnswersEventWaiters: a request waiting in GET /v1/events (a
// dashboard left open) is answered when vipswap stops, so it holds up
// neither the stop nor the one who waits.
func TestShutdownAnswersEventWaiters(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, staticSlot("blue", instance(t, "blue")), staticSlot("green", instance(t, "green")))
	n, _ := startNode(t, path)
	base := "http://" + n.adminLn.Addr().String()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	// Once every instance is healthy nothing else happens: the waiter
	// below waits for what comes after, which only the shutdown answers.
	vstest.WaitFor(t, 30*time.Second, func() error {
		for _, s := range n.ctrl.Status().Slots {
			for _, i := range s.Instances {
				if !i.Healthy {
					return fmt.Errorf("%s %s not healthy yet", s.Name, i.Addr)
				}
			}
		}
		return nil
	})
	since := n.ctrl.LastEvent()

	wrote := make(chan struct{})
	var once sync.Once
	type answer struct {
		code int
		body string
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(wrote) }) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", fmt.Sprintf("%s/v1/events?since=%d&wait=25s", base, since), nil)
		resp, err := hc.Do(req)
		once.Do(func() { close(wrote) })
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, string(body), err}
	}()
	<-wrote
	// Served after the waiter's connection: the waiter waits by now (or
	// comes in during the shutdown, and is answered the same).
	if _, err := get(base + "/v1/status"); err != nil {
		t.Fatal(err)
	}
	n.shutdown()
	a := <-answered
	if a.err != nil || a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "stopping") {
		t.Fatalf("the event waiter at shutdown got %d %q (%v); want a 503 saying vipswap is stopping", a.code, a.body, a.err)
	}
}
