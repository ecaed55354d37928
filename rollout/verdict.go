package rollout

import (
	"fmt"
	"time"

	"github.com/vipswap/vipswap/route"
)

// Verdict is the analysis of a rollout's canary at one moment.
type Verdict struct {
	// Canary and Stable are what prod's plan sent each over the window.
	Canary, Stable Judgement
	// Window is how far back the figures go.
	Window time.Duration
	// Enough reports that the canary had enough requests to be judged.
	Enough bool
	// Breach says which bound the canary broke; empty when none.
	Breach string
}

// Outcome names the verdict in one word: "pass", "wait" (too few canary
// requests to judge) or "breach".
func (v *Verdict) Outcome() string {
	switch {
	case v.Breach != "":
		return "breach"
	case !v.Enough:
		return "wait"
	}
	return "pass"
}

// Judgement is one slot's figures as the analysis judges them: only the
// requests prod's weights (or an affinity cookie vipswap issued) sent
// there, each client source counting at most SourceCap times the median
// source's requests, so one client cannot outweigh the others.
type Judgement struct {
	// Requests and Errors are the judged requests and errors among them,
	// as counted.
	Requests, Errors uint64
	// Weighed and WeighedErrors are the same after the source cap: the
	// error rate judged is WeighedErrors / Weighed.
	Weighed, WeighedErrors float64
	// Sources is how many source groups sent them (0: the data plane
	// cannot tell sources apart, and nothing was capped).
	Sources int
	// P99 is the instances' latency (request sent to response head) under
	// which 99 % of the judged requests were answered.
	P99 time.Duration
	// Steered counts the requests a pin header or a route sent to the
	// slot: shown, never judged.
	Steered route.Tally
	// Paths are the judged requests under each watched path prefix.
	Paths []PathJudgement
}

// PathJudgement is the judged requests under one path prefix: as
// counted, and weighed by source as a Judgement's.
type PathJudgement struct {
	// Prefix is the watched path prefix.
	Prefix string
	// Tally is the judged requests under Prefix and their errors, as
	// counted.
	route.Tally
	// Weighed and WeighedErrors are the same after the source cap.
	Weighed, WeighedErrors float64
}

// Rate returns the path's error rate judged: WeighedErrors over Weighed.
func (p PathJudgement) Rate() float64 {
	if p.Weighed == 0 {
		return 0
	}
	return p.WeighedErrors / p.Weighed
}

// Rate returns the error rate judged: WeighedErrors over Weighed.
func (j Judgement) Rate() float64 {
	if j.Weighed == 0 {
		return 0
	}
	return j.WeighedErrors / j.Weighed
}

// weighing says how the source cap weighed the requests, when it did:
// " weighed as 74 from 4 sources".
func (j Judgement) weighing() string {
	if j.Sources == 0 || uint64(j.Weighed+0.5) == j.Requests {
		return ""
	}
	return fmt.Sprintf(" weighed as %.0f from %d sources", j.Weighed, j.Sources)
}

// roundLatency keeps three significant digits of d, as a latency is
// worth reading: 7.72ms, 118ms, 1.25s.
func roundLatency(d time.Duration) time.Duration {
	for unit := time.Nanosecond; unit < time.Hour; unit *= 10 {
		if d < 1000*unit {
			return d.Round(unit)
		}
	}
	return d
}
