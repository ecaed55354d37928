package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vipswap/vipswap/store"
)

// Every restart is a history entry (operation "restart"), as every
// upgrade is: the process that serves on a state file keeps a small note
// beside it (its local base + ".run"): its PID and version once it
// serves, and, once it has stopped gracefully, when its stop began and
// ended and what it served and failed on prod meanwhile. The next process
// that starts on the state file (not one that takes over by an upgrade,
// whose entry is the upgrade's) reads the note once it serves and records
// the restart: the two versions and PIDs, who started it, how long it took
// to serve, and whether the previous process stopped gracefully or ended
// without stopping (a crash, kill -9: its requests in flight failed, and
// how many is not known).

// runNote is that file's content.
type runNote struct {
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	Serving time.Time `json:"serving"`
	// Set once the process stopped gracefully.
	Stopped   bool      `json:"stopped,omitempty"`
	StopBegan time.Time `json:"stop_began,omitzero"`
	StopEnded time.Time `json:"stop_ended,omitzero"`
	Served    uint64    `json:"served,omitempty"`
	Failed    uint64    `json:"failed,omitempty"`
}

// maxRunNote bounds what is read of the note: it is small.
const maxRunNote = 64 << 10

// runNotePath is where the note is kept.
func (n *node) runNotePath() string { return n.initial.State.LocalBase() + ".run" }

// readRunNote reads the note (nil, nil when there is none).
func (n *node) readRunNote() (*runNote, error) {
	f, err := openRegular(n.runNotePath())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var note runNote
	if err := json.NewDecoder(io.LimitReader(f, maxRunNote)).Decode(&note); err != nil {
		return nil, fmt.Errorf("%s: %w", n.runNotePath(), err)
	}
	return &note, nil
}

// writeRunNote replaces the note.
func (n *node) writeRunNote(note *runNote) {
	raw, err := json.Marshal(note)
	if err == nil {
		tmp := n.runNotePath() + ".tmp"
		os.Remove(tmp) // not through what may be there
		if err = os.WriteFile(tmp, raw, 0o600); err == nil {
			err = os.Rename(tmp, n.runNotePath())
		}
	}
	if err != nil {
		n.log.Warn("could not write the note for the next restart's history entry", "path", n.runNotePath(), "err", err)
	}
}

// restartActor is who started this process, for the history: systemd
// (which sets INVOCATION_ID for a service's processes), else "local".
func restartActor() string {
	if os.Getenv("INVOCATION_ID") != "" {
		return "systemd"
	}
	return "local"
}

// noteServing, once this process serves, records the restart that
// started it (unless it took over by an upgrade), and writes the note
// that names it for the next one.
func (n *node) noteServing(startToReady time.Duration) {
	now := time.Now().UTC()
	if !n.takingOver() {
		prev, err := n.readRunNote()
		if err != nil {
			n.log.Warn("the note of the previous process is unreadable: the restart is recorded without it", "err", err)
		}
		if err != nil || prev != nil {
			n.recordRestart(prev, startToReady, now)
		}
	}
	n.writeRunNote(&runNote{PID: os.Getpid(), Version: n.version, Serving: now})
}

// recordRestart records the restart of this process after prev (nil:
// unknown).
func (n *node) recordRestart(prev *runNote, startToReady time.Duration, now time.Time) {
	e := store.Entry{Time: processStart.UTC(), Actor: restartActor(), Operation: "restart", Result: store.Applied}
	m := store.Measurement{Start: processStart.UTC(), End: now}
	switch {
	case prev == nil:
		e.Changes = []string{"vipswap ? -> " + n.version,
			fmt.Sprintf("process ? -> %d, serving %s after its start", os.Getpid(), startToReady.Round(time.Millisecond)),
			"the previous process left no readable note"}
	default:
		e.Changes = []string{"vipswap " + prev.Version + " -> " + n.version,
			fmt.Sprintf("process %d -> %d, serving %s after its start", prev.PID, os.Getpid(), startToReady.Round(time.Millisecond))}
		if prev.Stopped {
			e.Changes = append(e.Changes, fmt.Sprintf("the previous process stopped gracefully (%s to finish its requests in flight)",
				prev.StopEnded.Sub(prev.StopBegan).Round(time.Millisecond)))
			m.Start, m.Served, m.Failed, m.Complete = prev.StopBegan, prev.Served, prev.Failed, true
			m.Drained = prev.StopEnded.Sub(prev.StopBegan)
		} else {
			e.Changes = append(e.Changes, "the previous process ended without stopping (a crash, kill -9): its requests in flight failed, how many is not known")
		}
	}
	if n.st.etcd != nil { // a cluster's history: which node restarted
		e.Changes = append(e.Changes, "node "+nodeName(n.adminLn.Addr().String()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := n.st.Record(ctx, e)
	if err == nil && m.Complete { // what a crashed process served is not known
		err = n.st.Measure(ctx, rec.ID, m)
	}
	if err != nil {
		n.log.Warn("could not record the restart in the history", "err", err)
		return
	}
	n.log.Info("restart recorded", "history_id", rec.ID)
}

// stopNote is the note of a graceful stop under way.
type stopNote struct {
	began time.Time
	base  [2]uint64
}

// beginStopNote notes the start of a graceful stop.
func (n *node) beginStopNote() stopNote {
	served, failed := n.prodCounts()
	return stopNote{began: time.Now().UTC(), base: [2]uint64{served, failed}}
}

// endStopNote, once the requests in flight are finished, notes the
// graceful stop for the next process's restart entry; not when a new
// process replaced this one (the note is the new one's).
func (n *node) endStopNote(s stopNote) {
	if n.ho != nil {
		select {
		case <-n.ho.upgraded:
			return
		default:
		}
	}
	note, err := n.readRunNote()
	if err != nil || note == nil || note.PID != os.Getpid() {
		return // not this process's note (it never served, or another one took it)
	}
	served, failed := n.prodCounts()
	note.Stopped, note.StopBegan, note.StopEnded = true, s.began, time.Now().UTC()
	note.Served, note.Failed = served-min(served, s.base[0]), failed-min(failed, s.base[1])
	n.writeRunNote(note)
}

// openRegular opens path, which must be a regular file: a FIFO put there
// would block the open (and the start) forever.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	return os.Open(path)
}
