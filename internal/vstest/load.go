package vstest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load sends GET requests from concurrent keep-alive clients until stopped,
// counting every answer by slot and every failure.
type Load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ok     atomic.Int64

	mu     sync.Mutex // guards bySlot, failed and errs
	bySlot map[string]int64
	failed int64
	errs   []string
}

// Result is what a Load counted.
type Result struct {
	// OK counts 200 answers.
	OK int64
	// Failed counts everything else: other statuses and transport errors.
	Failed int64
	// BySlot counts 200 answers per slot that served them.
	BySlot map[string]int64
	// Errors holds the first few failures, for the test log.
	Errors []string
}

// StartLoad starts clients goroutines sending GET url as fast as answers
// come, for at most limit (a safety bound; call Stop sooner).
func StartLoad(url string, clients int, limit time.Duration) *Load {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	l := &Load{cancel: cancel, bySlot: make(map[string]int64)}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for range clients {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				l.once(ctx, hc, url)
			}
		})
	}
	return l
}

func (l *Load) once(ctx context.Context, hc *http.Client, url string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			l.fail(err.Error())
		}
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		l.fail(fmt.Sprintf("status %d, body %q, read error %v", resp.StatusCode, body, err))
		return
	}
	var answer struct{ Slot string }
	json.Unmarshal(body, &answer)
	l.ok.Add(1)
	l.mu.Lock()
	l.bySlot[answer.Slot]++
	l.mu.Unlock()
}

// fail counts a failure and keeps its message, stamped with the time it
// happened so that a test's log can be read beside the processes' logs.
func (l *Load) fail(msg string) {
	at := time.Now().UTC().Format("15:04:05.000")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed++
	if len(l.errs) < 10 {
		l.errs = append(l.errs, at+" "+msg)
	}
}

// OK returns how many requests have succeeded so far.
func (l *Load) OK() int64 { return l.ok.Load() }

// Stop ends the load, waits for the clients and returns the counts.
func (l *Load) Stop() Result {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	by := make(map[string]int64, len(l.bySlot))
	for k, v := range l.bySlot {
		by[k] = v
	}
	return Result{OK: l.ok.Load(), Failed: l.failed, BySlot: by, Errors: append([]string(nil), l.errs...)}
}
