package azure

import (
	"context"
	"errors"
	"time"
)

// SlotSwitch is what a driver that switches whole slots (azure_lb,
// azure_appgw) remembers of its own switches, and its one attempt at a
// switch: V is the driver's view of the fields it owns on the resource.
// Only the driver's Apply uses it, one call at a time.
type SlotSwitch[V comparable] struct {
	// Last is what vipswap last set and saw in force; nil when nothing
	// yet, or when what the resource shows is not known to be vipswap's
	// (a write not seen to finish, another node leading).
	Last *V
	// Unconfirmed is the slot whose switch the VIP did not show in time:
	// the next attempt asks the VIP again even if the resource already
	// shows it.
	Unconfirmed string
}

// Switch is one attempt at making the resource show want, prod's slot
// being prod: write puts it in force (and says whether it wrote); a node
// that does not lead (ErrFollowing) waits, through follow, until read
// shows want; once in force the VIP must answer from prod (confirm)
// before the revision counts as applied in tracker. switched reports a
// confirmed switch: the API's time and the VIP's.
func (s *SlotSwitch[V]) Switch(ctx context.Context, rev uint64, prod string, want V, timeout time.Duration,
	write func(context.Context, V) (bool, error), read func(context.Context) (V, error),
	follow *Follow, tracker *Tracker, confirm *Confirm, switched func(api, vip time.Duration)) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	changed, err := write(wctx, want)
	if errors.Is(err, ErrFollowing) {
		s.Last = nil // the leader writes; this node expects nothing of its own
		follow.Want(rev, func(ctx context.Context) (bool, error) {
			cur, err := read(ctx)
			return cur == want, err
		})
		return nil
	}
	follow.Drop()
	if err != nil {
		if changed {
			// Azure took the write but was not seen to finish it: what
			// the resource shows is either state, and the VIP is asked
			// once it shows want.
			s.Last, s.Unconfirmed = nil, prod
		}
		tracker.Failed(rev, err)
		return err
	}
	s.Last = &want
	took := time.Since(start)
	if changed || s.Unconfirmed == prod {
		vip, err := confirm.Wait(ctx, prod)
		if err != nil {
			s.Unconfirmed = prod
			tracker.Failed(rev, err)
			return err
		}
		s.Unconfirmed = ""
		switched(took, vip)
		took += vip
	}
	tracker.Applied(rev, took)
	return nil
}
