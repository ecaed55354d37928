package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// TestDrainInstanceUnderLoad: an operator drains one instance of the active
// slot and readies it again under load. No request fails, and once its
// in-flight requests are done the drained instance gets no new ones.
func TestDrainInstanceUnderLoad(t *testing.T) {
	dir := t.TempDir()
	_, addrs := startStatic(t, 2)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	ctx := context.Background()
	victim := addrs["blue"][0]

	load := vstest.StartLoad(sw.Prod+"/api/test", 100, time.Minute)
	waitServed(t, load, 1000)
	if _, err := sw.Client.Drain(ctx, "blue", victim, wire.ChangeRequest{Reason: "test"}); err != nil {
		load.Stop()
		t.Fatal(err)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		i, err := instance(t, sw, victim)
		if err == nil && i.InFlight.Total() != 0 {
			err = fmt.Errorf("%d requests still in flight on the drained instance", i.InFlight.Total())
		}
		return err
	})
	servedAtDrain := instanceServed(t, sw, victim)
	waitServed(t, load, load.OK()+3000)
	servedLater := instanceServed(t, sw, victim)

	if _, err := sw.Client.Ready(ctx, "blue", victim, wire.ChangeRequest{}); err != nil {
		load.Stop()
		t.Fatal(err)
	}
	waitServed(t, load, load.OK()+3000)
	res := load.Stop()

	t.Logf("%d requests ok, %d failed", res.OK, res.Failed)
	if res.Failed != 0 {
		t.Fatalf("%d requests failed, want 0; first: %v", res.Failed, res.Errors)
	}
	if servedLater != servedAtDrain {
		t.Fatalf("drained instance served %d new requests, want 0", servedLater-servedAtDrain)
	}
	if got := instanceServed(t, sw, victim); got == servedLater {
		t.Fatal("readied instance got no requests")
	}
}
