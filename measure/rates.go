package measure

import (
	"time"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// Rates returns the per-second request and error rates and latencies of
// each slot (both listeners together) between neighbouring snapshots,
// oldest first, as the admin API gives them.
func Rates(snaps []Snapshot) []wire.RateSample {
	out := make([]wire.RateSample, 0, len(snaps))
	for i := 1; i < len(snaps); i++ {
		prev, cur := snaps[i-1], snaps[i]
		secs := cur.At.Sub(prev.At).Seconds()
		if secs <= 0 {
			continue
		}
		diff := cur.Counts.Sub(prev.Counts)
		s := wire.RateSample{Time: cur.At.UTC().Truncate(time.Millisecond), Slots: map[string]wire.SlotRate{}}
		names := map[string]bool{}
		for l := range diff {
			for name := range diff[l] {
				names[name] = true
			}
		}
		for name := range names {
			n := diff.Slot(name)
			if name == route.NoSlot && n.Requests() == 0 {
				continue // show "none" only in seconds that had such requests
			}
			s.Slots[name] = wire.SlotRate{
				Requests: float64(n.Requests()) / secs,
				Errors:   float64(n.Errors()) / secs,
				P50:      float64(n.Quantile(0.5)) / float64(time.Millisecond),
				P99:      float64(n.Quantile(0.99)) / float64(time.Millisecond),
			}
		}
		out = append(out, s)
	}
	return out
}
