package node

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"strconv"
	"time"

	"github.com/vipswap/vipswap/launch"
)

// How an upgrade hands the managed instances (run:) over (Linux; see
// launch's Hold, Release, Adopt and Own):
//
//  1. The old process holds its groups (no instance starts or is replaced
//     meanwhile; one that crashes waits), and passes, with the listening
//     sockets, the read end of each instance's output pipe and of a
//     release pipe. Its ledger file lists the instances: slot, address,
//     process group, start time, marker, command.
//  2. The new process reads that ledger and adopts, slot by slot, the
//     instances that run what its configuration says (command, version,
//     address, replicas), without touching them: it neither stops,
//     restarts nor reads them yet. A slot whose instances differ gets new
//     ones, as at a start. Its own ledger is written aside (the ledger
//     file plus ".next") meanwhile.
//  3. When the new process is ready, the old one releases its groups (it
//     stops reading their output and will not stop them when it exits)
//     and its ledger, and writes to the release pipe the instances it
//     handed over and the partial last lines it had read.
//  4. The new process reads that, owns the adopted instances (reads their
//     output, restarts a crashed one, stops them when it stops), takes the
//     ledger file over, and stops the handed instances it did not adopt
//     (verified as the ledger's, as after a crash).
//
// A new process that fails before it is ready leaves the instances with
// the old one, which resumes and stops what the failed one started (its
// ledger aside).

// releaseFile names the release pipe among the files tableflip passes;
// instanceFile an instance's output pipe.
const releaseFile = "vipswap-release"

func instanceFile(pgid int) string { return "vipswap-instance-" + strconv.Itoa(pgid) }

// releaseNote is what the old process writes to the release pipe once
// the new one is ready.
type releaseNote struct {
	// Handed are the instances it handed over, all of them.
	Handed []launch.Record `json:"handed"`
	// Pending are the partial last lines of output it had read, by
	// instance address.
	Pending map[string][]byte `json:"pending,omitempty"`
}

// maxReleaseNote bounds what the new process reads from the release pipe.
const maxReleaseNote = 4 << 20

// adoption is the new process's side of a hand-over.
type adoption struct {
	rel     *os.File        // the release pipe
	records []launch.Record // what the ledger file listed
}

// heldInstances is the old process's side of a hand-over under way.
type heldInstances struct {
	groups []*launch.Group
	handed []launch.Record
}

// prepareAdoption, in a new process that replaces one that hands its
// instances over (rel, the release pipe), reads the ledger for the
// instances to adopt and their output pipes. A ledger that cannot be read
// adopts nothing: the slots' instances start afresh, and the old ones are
// stopped once this process serves (those the release note lists).
func (n *node) prepareAdoption(ledger *launch.Ledger, rel *os.File) {
	ledger.WriteAside(ledger.Path() + ".next")
	a := &adoption{rel: rel}
	n.ho.adopt = a
	recs, err := ledger.Records()
	if err != nil {
		n.log.Error("cannot adopt the managed instances of the previous vipswap process: they are started afresh, and the previous ones stopped once this process serves", "err", err)
		return
	}
	a.records = recs
	handed := map[string][]launch.Handed{}
	for _, r := range recs {
		f, err := n.ho.upg.Fds.File(instanceFile(r.PGID))
		if err != nil || f == nil {
			n.log.Warn("the previous vipswap process did not hand this instance over: it is not adopted", "slot", r.Slot, "instance", r.Addr, "pgid", r.PGID)
			continue
		}
		handed[r.Slot] = append(handed[r.Slot], launch.Handed{Record: r, Output: f})
	}
	n.sup.setHanded(handed)
}

// ownInstances, in a new process that is ready, waits for the previous
// process's release note (bounded), then owns the adopted instances and
// the ledger, and stops the handed instances it did not adopt.
func (n *node) ownInstances() {
	a := n.ho.adopt
	if a == nil {
		return
	}
	n.ho.adopt = nil
	var note releaseNote
	a.rel.SetReadDeadline(time.Now().Add(10 * time.Second))
	err := json.NewDecoder(io.LimitReader(a.rel, maxReleaseNote)).Decode(&note)
	a.rel.Close()
	if err != nil {
		// The old process died, or wrote nothing sensible: it no longer
		// reads the output either way. Its ledger says what it ran.
		n.log.Warn("no release note from the previous vipswap process: its ledger says what it handed over", "err", err)
		note = releaseNote{Handed: a.records}
	}
	if err := n.sup.ledger.TakeOver(); err != nil {
		n.log.Warn("could not write the instance ledger", "err", err)
	}
	keep := n.sup.own(note.Pending)
	left := note.Handed
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.sup.ledger.StopLeftovers(left, keep, maxStopTimeout(n.initial))
	}()
	n.onClose(func() { <-done })
}

// holdInstances, in the old process before it starts the new one, holds
// the managed instances and passes their output pipes and the release
// pipe to tableflip.
func (n *node) holdInstances() (*heldInstances, error) {
	h := &heldInstances{groups: n.sup.freeze()}
	for _, g := range h.groups {
		for _, x := range g.Hold() {
			// tableflip keeps what it was given until an upgrade
			// succeeds: a pipe given at a failed attempt is not given again.
			name := instanceFile(x.PGID)
			if !n.ho.added[name] {
				if err := n.ho.upg.Fds.AddFile(name, x.Output); err != nil {
					n.resumeInstances(h)
					return nil, fmt.Errorf("passing the output of instance %s on: %w", x.Addr, err)
				}
				n.ho.added[name] = true
			}
			h.handed = append(h.handed, x.Record)
		}
	}
	if n.ho.relW == nil {
		r, w, err := os.Pipe()
		if err != nil {
			n.resumeInstances(h)
			return nil, err
		}
		err = n.ho.upg.Fds.AddFile(releaseFile, r)
		r.Close()
		if err != nil {
			w.Close()
			n.resumeInstances(h)
			return nil, err
		}
		n.ho.relW = w
	}
	return h, nil
}

// resumeInstances, after a failed upgrade, lets the held instances start
// and restart again, and stops what the failed new process started
// (its ledger aside), in the background.
func (n *node) resumeInstances(h *heldInstances) {
	for _, g := range h.groups {
		g.Resume()
	}
	n.sup.thaw()
	if l := n.sup.ledger; l != nil {
		go func() {
			if _, err := l.ReclaimFile(l.Path()+".next", maxStopTimeout(n.initial)); err != nil {
				n.log.Warn("could not stop what the failed new process started", "err", err)
			}
		}()
	}
}

// releaseInstances, once the new process is ready, lets go of the held
// instances and tells the new process so.
func (n *node) releaseInstances(h *heldInstances) {
	if n.sup.ledger != nil {
		n.sup.ledger.Release()
	}
	pending := map[string][]byte{}
	for _, g := range h.groups {
		maps.Copy(pending, g.Release())
	}
	if err := json.NewEncoder(n.ho.relW).Encode(releaseNote{Handed: h.handed, Pending: pending}); err != nil {
		n.log.Warn("could not tell the new process the instances are released", "err", err)
	}
	n.ho.relW.Close()
	n.log.Info("managed instances handed to the new process", "instances", len(h.handed))
}
