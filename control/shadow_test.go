package control_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/wire"
)

// shadowPlane records the shadows the controller puts in force.
type shadowPlane struct {
	mu  sync.Mutex
	set []*state.Shadow
}

func (p *shadowPlane) Set(sh *state.Shadow) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.set = append(p.set, sh)
}

func (p *shadowPlane) last() *state.Shadow {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.set) == 0 {
		return nil
	}
	return p.set[len(p.set)-1]
}

func (p *shadowPlane) Figures() *wire.ShadowFigures { return &wire.ShadowFigures{Same: 7} }
func (p *shadowPlane) Effective() (fields, headers []string) {
	return []string{"ts"}, nil
}

// TestShadowIsOperatorState: a shadow is started and stopped as changes
// recorded in the history, put in force on the mirror, kept across a
// restart, and ended in the same change as a swap that makes its slot
// active.
func TestShadowIsOperatorState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	open := func(plane *shadowPlane) (*control.Controller, *bolt.Store) {
		st, err := bolt.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ctrl, err := control.New(context.Background(), control.Config{
			Slots:  []control.Slot{{Name: "blue", Addrs: []string{blue}}, {Name: "green", Addrs: []string{green}}},
			Active: "blue", Store: st, Shadow: plane,
			Health: health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
		return ctrl, st
	}
	ctx := context.Background()
	plane := &shadowPlane{}
	ctrl, st := open(plane)
	res, err := ctrl.StartShadow(ctx, wire.ShadowRequest{To: "green", Percent: 12.5, Duration: "1h", ChangeRequest: wire.ChangeRequest{Actor: "ops"}})
	if err != nil || !res.Applied {
		t.Fatalf("start: %+v, %v", res, err)
	}
	if sh := plane.last(); sh == nil || sh.To != "green" || sh.PerMille != 125 || strings.Join(sh.Methods, ",") != "GET,HEAD" || sh.Actor != "ops" {
		t.Fatalf("the mirror was given %+v", sh)
	}
	if sh := ctrl.Status().Shadow; sh == nil || sh.Percent != 12.5 || sh.Figures == nil || sh.Figures.Same != 7 || sh.Until == nil {
		t.Fatalf("status shadow %+v", sh)
	}
	ctrl.Close()
	st.Close()

	// A restarted controller puts the same shadow in force.
	plane = &shadowPlane{}
	ctrl, st = open(plane)
	defer st.Close()
	defer ctrl.Close()
	if sh := plane.last(); sh == nil || sh.To != "green" || sh.PerMille != 125 {
		t.Fatalf("after a restart the mirror was given %+v, want the shadow to green", sh)
	}
	// A swap makes green active: the shadow ends in the same change.
	waitRoutable(t, ctrl, "green")
	if _, err := ctrl.Swap(ctx, wire.ChangeRequest{}); err != nil {
		t.Fatal(err)
	}
	if ctrl.Status().Shadow != nil || plane.last() != nil {
		t.Fatalf("after the swap: status %+v, mirror %+v; want no shadow", ctrl.Status().Shadow, plane.last())
	}
	h, err := ctrl.History(ctx, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if h[0].Operation != "swap" || !strings.Contains(strings.Join(h[0].Changes, ";"), "shadow: to green ended, slot green takes prod traffic now") || h[1].Operation != "shadow start" {
		t.Fatalf("history %+v", h[:2])
	}
	if _, err := ctrl.StopShadow(ctx, wire.ChangeRequest{}); err == nil {
		t.Fatal("stopping no shadow was not refused")
	}
}

// waitRoutable waits until slot has a routable instance.
func waitRoutable(t *testing.T, ctrl *control.Controller, slot string) {
	t.Helper()
	vstest.WaitFor(t, time.Minute, func() error {
		for _, s := range ctrl.Status().Slots {
			if s.Name == slot && s.Routable > 0 {
				return nil
			}
		}
		return fmt.Errorf("slot %s has no routable instance", slot)
	})
}

// TestAPlansShadowGateIsNotSkippedSilently: a plan whose shadow gate
// promises "no user reaches the new version before the shadow passed" is
// refused by a rollout start that would not run the gate, with the state
// as it was, unless the start says it skips it (skip_shadow, as a deploy
// that ran the gate does).
func TestAPlansShadowGateIsNotSkippedSilently(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	ctrl, err := control.New(context.Background(), control.Config{
		Slots:  []control.Slot{{Name: "blue", Addrs: []string{blue}}, {Name: "green", Addrs: []string{green}}},
		Active: "blue", Store: st, Shadow: &shadowPlane{},
		Health: health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
		Plans: map[string]rollout.Plan{
			"careful": {Steps: []int{100, 1000}, Interval: time.Hour, Shadow: &wire.ShadowGate{Duration: "5m", MaxDifferRate: 0.001}},
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	waitRoutable(t, ctrl, "green")
	ctx := context.Background()
	before := ctrl.Status().Revision
	_, err = ctrl.StartRolloutRequest(ctx, wire.RolloutRequest{To: "green", Plan: "careful"})
	var ce *control.Error
	if !errors.As(err, &ce) || ce.Kind != control.Invalid || !strings.Contains(err.Error(), "shadow gate") || !strings.Contains(err.Error(), "skip") {
		t.Fatalf("rollout start of a plan with a shadow gate: %v; want it refused as invalid, naming the gate and how to skip it", err)
	}
	if s := ctrl.Status(); s.Revision != before || ctrl.RolloutStatus().Running {
		t.Fatalf("a refused start changed the state: revision %d (was %d), rollout running %v", s.Revision, before, ctrl.RolloutStatus().Running)
	}
	res, err := ctrl.StartRolloutRequest(ctx, wire.RolloutRequest{To: "green", Plan: "careful", SkipShadow: true})
	if err != nil || !res.Applied || !ctrl.RolloutStatus().Running {
		t.Fatalf("rollout start with skip_shadow: %+v, %v; want it started", res, err)
	}
}

// TestAMirrorsStopEndsOnlyTheShadowItStopped: the mirror's stop names the
// shadow it stopped by its start; a later shadow to the same slot (the
// first stopped and another started meanwhile) goes on.
func TestAMirrorsStopEndsOnlyTheShadowItStopped(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	ctrl, err := control.New(context.Background(), control.Config{
		Slots:  []control.Slot{{Name: "blue", Addrs: []string{blue}}, {Name: "green", Addrs: []string{green}}},
		Active: "blue", Store: st, Shadow: &shadowPlane{},
		Health: health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	ctx := context.Background()
	start := func() time.Time {
		t.Helper()
		if _, err := ctrl.StartShadow(ctx, wire.ShadowRequest{To: "green", Percent: 10}); err != nil {
			t.Fatal(err)
		}
		return ctrl.Shadow().Started
	}
	first := start()
	if _, err := ctrl.StopShadow(ctx, wire.ChangeRequest{}); err != nil {
		t.Fatal(err)
	}
	var second time.Time
	vstest.WaitFor(t, 10*time.Second, func() error { // a new start, told apart from the first
		second = start()
		if second.Equal(first) {
			ctrl.StopShadow(ctx, wire.ChangeRequest{})
			return fmt.Errorf("started at the same instant")
		}
		return nil
	})
	ctrl.ShadowStopped(ctx, first, "slot green failed 50 of the last 50 copies")
	if sh := ctrl.Shadow(); sh == nil || !sh.Started.Equal(second) {
		t.Fatalf("a stale stop of the first shadow ended the second: shadow %+v", sh)
	}
	ctrl.ShadowStopped(ctx, second, "slot green failed 50 of the last 50 copies")
	if sh := ctrl.Shadow(); sh != nil {
		t.Fatalf("the mirror's stop of the running shadow left it running: %+v", sh)
	}
	h, err := ctrl.History(ctx, 0, 1)
	if err != nil || h[0].Operation != "shadow stop" || h[0].Actor != "vipswap" || !strings.Contains(h[0].Reason, "failed 50") {
		t.Fatalf("history %+v, %v: want the mirror's stop with its reason", h, err)
	}
}
