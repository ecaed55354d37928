// Package gate runs the checks a release or a rollout step must pass
// before it goes on: an HTTP GET that must answer 2xx, or a command that
// must exit 0. A command runs in a process group of its own, killed whole
// when it ends or its time is up, so what it started in the background
// neither outlives it nor holds its output open.
package gate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// HTTP gets url and fails unless it answers 2xx.
func HTTP(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s answered %s", url, resp.Status)
	}
	return nil
}

// Command runs argv with env (nil: vipswap's own) until it exits or ctx
// ends, and returns the last of what it printed (at most the last 4 KiB)
// with the error. Cancellation kills its whole process group where the
// system has them (see group_unix.go); elsewhere the command alone.
func Command(ctx context.Context, argv []string, env []string) (output string, err error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	// The output pipe is ours, not exec's: Wait returns when the command
	// exits, even while what it started in the background still holds
	// the pipe; that is killed next, which closes it.
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	out := &tail{max: 4096} // a gate may print without end: keep its last bytes
	copied := make(chan struct{})
	go func() {
		io.Copy(out, r)
		close(copied)
	}()
	cmd.Stdout, cmd.Stderr = w, w
	ownGroup(cmd)
	err = cmd.Start()
	w.Close()
	if err == nil {
		err = cmd.Wait()
		killGroup(cmd) // what it left running in the background
	}
	select {
	case <-copied:
	case <-time.After(time.Second): // a child outside its group holds the pipe
	}
	r.Close()
	<-copied
	return out.String(), err
}

// LastLine returns the last non-empty line of output, cut to max bytes.
func LastLine(output string, max int) string {
	last := strings.TrimSpace(output)
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	if len(last) > max {
		last = last[:max] + "..."
	}
	return last
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
