package azure

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Confirm probes the VIP itself after a change: a switch counts as done
// when the new slot answered every request of a window, not when Azure's
// API returned.
type Confirm struct {
	// URL is what is asked: the VIP's test path ("http://20.1.2.3/api/test"),
	// which names the slot that answered. Empty: no confirmation (the
	// driver says so in status).
	URL string
	// Answers maps a slot to what its instances name themselves in the
	// answer (an application may say "slot0"); default the slot's own name.
	Answers map[string]string
	// Window is how many answers in a row must name the slot. Default 10.
	Window int
	// Every is the pause between two requests. Default 200ms.
	Every time.Duration
	// Deadline bounds the wait. Default 2m.
	Deadline time.Duration
	// Client sends the requests; default one with a 2s timeout.
	Client *http.Client
}

// maxAnswer bounds what is read of one answer.
const maxAnswer = 64 << 10

// NotConvergedError says the VIP did not show the slot within the
// deadline.
type NotConvergedError struct {
	URL, Slot string
	Window    int
	Deadline  time.Duration
	Last      string
}

func (e *NotConvergedError) Error() string {
	return fmt.Sprintf("the VIP %s did not answer %s on %d requests in a row within %v (last answer: %s); Azure took the change: roll back with `vipswap rollback` if the new slot should not take traffic", e.URL, e.Slot, e.Window, e.Deadline, e.Last)
}

func (c Confirm) deadline() time.Duration {
	if c.Deadline <= 0 {
		return 2 * time.Minute
	}
	return c.Deadline
}

func (c Confirm) every() time.Duration {
	if c.Every <= 0 {
		return 200 * time.Millisecond
	}
	return c.Every
}

func (c Confirm) window() int {
	if c.Window <= 0 {
		return 10
	}
	return c.Window
}

// client is the client the VIP is asked with: Client or one with a 2s
// timeout, following no redirect (wherever it points is not the VIP,
// and a redirect names no slot).
func (c Confirm) client() *http.Client {
	hc := &http.Client{Timeout: 2 * time.Second}
	if c.Client != nil {
		cp := *c.Client
		hc = &cp
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hc
}

// Enabled reports whether there is a VIP to probe.
func (c Confirm) Enabled() bool { return c.URL != "" }

// Wait asks the VIP until slot answered Window requests in a row, and
// returns how long that took from its start (the last answer of the
// window). Without a URL it returns at once.
func (c Confirm) Wait(ctx context.Context, slot string) (time.Duration, error) {
	if c.URL == "" || slot == "" {
		return 0, nil
	}
	start := time.Now()
	deadline, every := c.deadline(), c.every()
	hc := c.client()
	want := slot
	if a, ok := c.Answers[slot]; ok {
		want = a
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	streak, last := 0, "none yet"
	var firstOfStreak time.Duration
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return time.Since(start), &NotConvergedError{URL: c.URL, Slot: slot, Window: c.window(), Deadline: deadline, Last: last}
			}
			return time.Since(start), ctx.Err()
		case <-t.C:
		}
		got, err := ask(ctx, hc, c.URL)
		switch {
		case err != nil && ctx.Err() != nil:
			// the deadline cut this request: keep the last real answer
		case err != nil:
			streak, last = 0, err.Error()
		case got == want:
			if streak == 0 {
				firstOfStreak = time.Since(start)
			}
			streak++
			last = got
			if streak >= c.window() {
				return firstOfStreak, nil
			}
		default:
			streak, last = 0, got
		}
		t.Reset(every)
	}
}

// ask GETs url once and returns the slot the answer names: a JSON
// object's "slot" (vipswap's sample application), or the answer's text.
func ask(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("request failed: %s", FirstLine(err.Error()))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return "", fmt.Errorf("answer cut: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	var named struct {
		Slot string `json:"slot"`
	}
	if json.Unmarshal(body, &named) == nil && named.Slot != "" {
		return named.Slot, nil
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s, nil
}

// WaitSplit asks the VIP until every slot of slots answered at least
// once and the last Window answers all came from slots, for a split (a
// shift, a rollout step), and returns how long until the last of them
// first answered. A split of one slot is Wait.
func (c Confirm) WaitSplit(ctx context.Context, slots []string) (time.Duration, error) {
	if len(slots) == 1 {
		return c.Wait(ctx, slots[0])
	}
	if c.URL == "" || len(slots) == 0 {
		return 0, nil
	}
	start := time.Now()
	deadline, every := c.deadline(), c.every()
	hc := c.client()
	want := map[string]bool{}
	for _, s := range slots {
		if a, ok := c.Answers[s]; ok {
			s = a
		}
		want[s] = true
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	seen := map[string]bool{}
	var allSeen time.Duration
	streak, last := 0, "none yet"
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return time.Since(start), &NotConvergedError{URL: c.URL, Slot: strings.Join(slots, " and "), Window: c.window(), Deadline: deadline, Last: last}
			}
			return time.Since(start), ctx.Err()
		case <-t.C:
		}
		got, err := ask(ctx, hc, c.URL)
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil:
			streak, last = 0, err.Error()
		case want[got]:
			seen[got] = true
			if len(seen) == len(want) && allSeen == 0 {
				allSeen = time.Since(start) // the split shows from here
			}
			streak++
			last = got
			if streak >= c.window() && len(seen) == len(want) {
				return allSeen, nil
			}
		default:
			streak, last = 0, got
		}
		t.Reset(every)
	}
}
