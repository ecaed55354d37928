package main

import (
	"context"
	"fmt"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// TestInstanceLossUnderLoad kills one instance of the active slot with
// SIGKILL under load, then starts it again on the same address: no GET may
// fail, and the restarted instance must be back in rotation.
func TestInstanceLossUnderLoad(t *testing.T) {
	dir := t.TempDir()
	apps, addrs := startStatic(t, 2)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	victim := apps["blue"][0]

	load := vstest.StartLoad(sw.Prod+"/api/test", 200, time.Minute)
	waitServed(t, load, 2000)
	victim.Signal(t, syscall.SIGKILL)
	victim.Wait(t, 10*time.Second)
	waitInstance(t, sw, victim.Addr, false)
	waitServed(t, load, load.OK()+2000)

	back := vstest.StartApp(t, "blue", victim.Addr)
	waitInstance(t, sw, back.Addr, true)
	servedBefore := instanceServed(t, sw, back.Addr)
	waitServed(t, load, load.OK()+2000)
	res := load.Stop()

	t.Logf("%d requests ok, %d failed", res.OK, res.Failed)
	if res.Failed != 0 {
		t.Fatalf("%d requests failed, want 0; first: %v", res.Failed, res.Errors)
	}
	if got := instanceServed(t, sw, back.Addr); got <= servedBefore {
		t.Fatalf("restarted instance served %d requests, no more than before (%d): not back in rotation", got, servedBefore)
	}
}

// waitServed waits until the load has n successful requests.
func waitServed(t *testing.T, load *vstest.Load, n int64) {
	t.Helper()
	vstest.WaitFor(t, 30*time.Second, func() error {
		if got := load.OK(); got < n {
			return fmt.Errorf("%d requests served, waiting for %d", got, n)
		}
		return nil
	})
}

// instance returns the status of the instance at addr.
func instance(t *testing.T, sw *switchtest.Switch, addr string) (wire.InstanceStatus, error) {
	t.Helper()
	st, err := sw.Client.Status(context.Background())
	if err != nil {
		return wire.InstanceStatus{}, err
	}
	for _, s := range st.Slots {
		for _, i := range s.Instances {
			if i.Addr == addr {
				return i, nil
			}
		}
	}
	return wire.InstanceStatus{}, fmt.Errorf("no instance %s in status", addr)
}

// waitInstance waits until the instance at addr has the given health.
func waitInstance(t *testing.T, sw *switchtest.Switch, addr string, healthy bool) {
	t.Helper()
	vstest.WaitFor(t, 15*time.Second, func() error {
		i, err := instance(t, sw, addr)
		if err == nil && i.Healthy != healthy {
			err = fmt.Errorf("instance %s is not healthy=%v", addr, healthy)
		}
		return err
	})
}

func instanceServed(t *testing.T, sw *switchtest.Switch, addr string) int64 {
	t.Helper()
	i, err := instance(t, sw, addr)
	if err != nil {
		t.Fatal(err)
	}
	return i.Served.Total()
}

// TestWholeSlotRestartUnderLoad (issue 9, point 8): every instance of the
// active slot is killed under load and started again at once. Requests
// that were in flight or retrying find no instance left: they hold, like
// new requests, until the instances are back, and go through. None fails.
func TestWholeSlotRestartUnderLoad(t *testing.T) {
	dir := t.TempDir()
	apps, addrs := startStatic(t, 2)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)

	load := vstest.StartLoad(sw.Prod+"/api/test", 50, time.Minute)
	waitServed(t, load, 2000)
	for _, a := range apps["blue"] {
		a.Signal(t, syscall.SIGKILL)
	}
	var restarted []*vstest.Process
	for _, a := range apps["blue"] {
		a.Wait(t, 10*time.Second)
		restarted = append(restarted, vstest.Start(t, vstest.Binary(t), "app", "--slot", "blue", "--listen", a.Addr))
	}
	for i, p := range restarted {
		p.WaitLine(t, appListening, 30*time.Second)
		waitInstance(t, sw, apps["blue"][i].Addr, true)
	}
	waitServed(t, load, load.OK()+2000)
	res := load.Stop()
	t.Logf("%d requests ok, %d failed", res.OK, res.Failed)
	if res.Failed != 0 {
		t.Fatalf("%d requests failed, want 0; first: %v", res.Failed, res.Errors)
	}
	if res.BySlot["blue"] == 0 || res.BySlot["green"] != 0 {
		t.Fatalf("answers by slot %v: want blue only", res.BySlot)
	}
}

var appListening = regexp.MustCompile(`listening on (\S+)`)
