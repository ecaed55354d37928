package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// LocalCopy is where a cluster node keeps the last state it put in force.
type LocalCopy interface {
	// Keep saves st at rev as the last state in force. A failure is
	// logged by the implementation, not returned: the copy is a fallback.
	Keep(st state.State, rev store.Revision)
	// LastSeen returns the last state kept, its revision and when it was
	// saved.
	LastSeen() (state.State, store.Revision, time.Time, error)
}

// LoadOrSeed returns the state s holds, seeding s when it is empty with
// active as the active slot of the slots names. Two nodes seeding at once
// agree: the loser of the compare-and-swap reads the winner's. When s is
// out of reach and local is set, it returns the last state local kept
// (fromCopy), and logs that to log.
func LoadOrSeed(ctx context.Context, s store.Store, local LocalCopy, log *slog.Logger, active string, names []string) (st state.State, rev store.Revision, fromCopy bool, err error) {
	for range 3 {
		st, rev, err = s.Load(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if st, err = state.Seed(active, names); err != nil {
				return st, 0, false, err
			}
			st.AffinityKey = state.NewAffinityKey()
			seed := store.Entry{Time: time.Now().UTC(), Actor: "local", Operation: "seed", To: st.Active, Result: store.Applied, Reason: "first start"}
			rev, _, err = s.CompareAndSwap(ctx, 0, st, seed)
			if errors.Is(err, store.ErrConflict) {
				continue // another node seeded it first: take its state
			}
			if err != nil {
				return st, 0, false, fmt.Errorf("seed state: %w", err)
			}
			return st, rev, false, nil
		case errors.Is(err, store.ErrUnavailable) && local != nil:
			seen, seenRev, saved, cerr := local.LastSeen()
			if cerr != nil {
				return st, 0, false, fmt.Errorf("%w; and no usable local copy of the state: %v", err, cerr)
			}
			log.Warn("state store unreachable at start: serving the local copy of the last state seen; changes are refused until the store is reached",
				"revision", seenRev, "saved", saved.Local().Format(time.DateTime), "err", err)
			return seen, seenRev, true, nil
		default:
			return st, rev, false, err
		}
	}
	return st, rev, false, err
}
