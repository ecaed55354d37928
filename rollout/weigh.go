package rollout

import (
	"slices"

	"github.com/vipswap/vipswap/route"
)

// SourceCap is how many times the median source group's requests one
// source group may count for in a judgement.
const SourceCap = 2

// judgementOf returns what the analysis judges of one slot's counts;
// paths are the prefixes the counts' Judged.Paths are by.
func judgementOf(c route.Counts, paths []string) Judgement {
	j := Judgement{Requests: c.Judged.Requests, Errors: c.Judged.Errors, P99: c.Judged.Latency.Quantile(0.99), Steered: c.Steered}
	j.Weighed, j.WeighedErrors, j.Sources = weigh(c.Judged.Tally, c.Judged.Sources)
	for i, p := range paths[:min(len(paths), route.MaxWatchedPaths)] {
		pj := PathJudgement{Prefix: p, Tally: c.Judged.PathTally(i)}
		pj.Weighed, pj.WeighedErrors, _ = weigh(pj.Tally, c.Judged.Paths[i])
		j.Paths = append(j.Paths, pj)
	}
	return j
}

// weigh returns the requests and errors of total, split by source in
// sources, with each source group counting at most SourceCap times the
// median group's requests (its errors scaled with them), and how many
// groups sent any. A single source is never capped; a data plane that
// reports no groups is taken as counted.
func weigh(total route.Tally, sources [route.SourceGroups]route.Tally) (requests, errors float64, groups int) {
	var ns []uint64
	for _, s := range sources {
		if s.Requests > 0 {
			ns = append(ns, s.Requests)
		}
	}
	if len(ns) == 0 {
		return float64(total.Requests), float64(total.Errors), 0
	}
	slices.Sort(ns)
	limit := SourceCap * ns[(len(ns)-1)/2] // the lower median
	for _, s := range sources {
		if s.Requests == 0 {
			continue
		}
		n := min(s.Requests, limit)
		requests += float64(n)
		errors += float64(s.Errors) * float64(n) / float64(s.Requests)
	}
	return requests, errors, len(ns)
}
