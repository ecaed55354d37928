package rollout

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vipswap/vipswap/gate"
	"github.com/vipswap/vipswap/state"
)

// RunGates runs a step's gates in order, each within its timeout (30s
// when it sets none); the first that fails says why.
func RunGates(ctx context.Context, gates []state.Gate) error {
	for _, g := range gates {
		timeout := g.Timeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		gctx, cancel := context.WithTimeout(ctx, timeout)
		err := runGate(gctx, g)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func runGate(ctx context.Context, g state.Gate) error {
	if g.HTTP != "" {
		if err := gate.HTTP(ctx, g.HTTP); err != nil {
			return err
		}
	}
	if len(g.Command) > 0 {
		out, err := gate.Command(ctx, g.Command, nil)
		if err != nil {
			tail := strings.TrimSpace(out)
			if len(tail) > 200 {
				tail = tail[len(tail)-200:]
			}
			return fmt.Errorf("%s: %v: %s", strings.Join(g.Command, " "), err, tail)
		}
	}
	return nil
}
