package azure

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// Guard is a whole resource that a driver writes with one PUT under
// If-Match (azure_lb's load balancer, azure_appgw's gateway): R is the
// SDK's type of the resource, V the driver's view of the fields it owns,
// which drift errors print.
type Guard[R any, V View] struct {
	// Conn reaches ARM: its resource group holds the resource, its poll
	// options poll the write.
	Conn Conn
	// Kind and Name name the resource ("load balancer", "api-lb"), in
	// errors and the log.
	Kind, Name string
	// Log logs a write tried again for a stale ETag; the driver gives it
	// the attributes that name the resource.
	Log *slog.Logger
	// Read GETs the resource and the driver's view of it; an error when
	// the resource has no ETag.
	Read func(context.Context) (R, V, error)
	// ETag is the resource's ETag, which Read checked is there.
	ETag func(R) string
	// Check vets what the resource shows when vipswap has set nothing of
	// its own yet (a fresh node): a *DriftError when it is none of the
	// slots', nil when it is.
	Check func(cur V) error
	// Set changes the resource to show a view.
	Set func(*R, V) error
	// Leading, if set, says whether this node writes.
	Leading func() bool
	// Last is what vipswap last set and saw in force (SlotSwitch.Last).
	Last *V
}

// View is what a driver reads and writes of a resource.
type View interface {
	comparable
	fmt.Stringer
}

func (g Guard[R, V]) resource() string { return g.Kind + " " + g.Name }

// WriteIfMatch puts want in force on g's resource with one PUT under
// If-Match (begin, the SDK client's BeginCreateOrUpdate), polled to the
// end, and says whether it wrote. The resource must show what vipswap
// expects: what it last set, or else (g.Check) a slot's; otherwise that is
// drift, reported, and nothing is overwritten. A write refused for a
// stale ETag is tried again, a few times, only if the resource still
// shows what was read before. A node that does not lead writes nothing
// (ErrFollowing).
func WriteIfMatch[R any, V View, O, P any](ctx context.Context, g Guard[R, V], want V,
	begin func(ctx context.Context, resourceGroup, name string, r R, opts *O) (*runtime.Poller[P], error)) (bool, error) {
	var expect *V
	for attempt := 0; ; attempt++ {
		r, cur, err := g.Read(ctx)
		if err != nil {
			return false, err
		}
		if cur == want {
			return false, nil
		}
		switch {
		case expect != nil && cur != *expect:
			return false, &DriftError{Resource: g.resource(), What: fmt.Sprintf("between vipswap's read and its write: %s, was %s", cur, *expect)}
		case expect == nil && g.Last != nil && cur != *g.Last:
			return false, &DriftError{Resource: g.resource(), What: fmt.Sprintf("it shows %s; vipswap last set %s", cur, *g.Last)}
		case expect == nil && g.Last == nil:
			if err := g.Check(cur); err != nil {
				return false, err
			}
		}
		if g.Leading != nil && !g.Leading() {
			return false, ErrFollowing
		}
		if attempt >= 3 {
			return false, fmt.Errorf("%s: its ETag changed under every write (%d tries); nothing changed", g.resource(), attempt)
		}
		if err := g.Set(&r, want); err != nil {
			return false, err
		}
		poller, err := begin(IfMatch(ctx, g.ETag(r)), g.Conn.ResourceGroup, g.Name, r, nil)
		if IsStale(err) {
			c := cur
			expect = &c
			g.Log.Info("the " + g.Kind + " changed between read and write (ETag); reading it again")
			continue
		}
		if err != nil {
			return false, Explain("updating "+g.resource(), err)
		}
		if _, err := poller.PollUntilDone(ctx, g.Conn.PollOptions()); err != nil {
			return true, Explain("updating "+g.resource()+" (polling the operation)", err)
		}
		return true, nil
	}
}
