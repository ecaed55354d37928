package launch

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// markerEnv names the environment entry every instance of one vipswap run
// carries (and passes on to what it starts): VIPSWAP_RUN=<random id>. It is
// how a later run tells its predecessor's processes from unrelated ones
// that happen to reuse a process group ID.
const markerEnv = "VIPSWAP_RUN"

// Ledger is a small file, kept next to the state file, that lists the
// process groups a vipswap run has started and not yet stopped. A run
// stopped by kill -9 cannot stop its instances; Pdeathsig kills the
// commands it started, but not what those started in turn (an application
// under a shell without exec). The next run, before starting its own,
// calls Reclaim: it stops the processes of the listed groups that are still
// alive and still carry the previous run's marker, and only those.
//
// Only one vipswap uses a state file at a time (the store's lock), so the
// caller must hold that lock before Reclaim.
type Ledger struct {
	path string
	log  *slog.Logger
	id   string // this run's marker value

	mu     sync.Mutex // guards groups, aside, released
	groups map[int]Record
	// aside, when set, is the file written instead of path: a new process
	// writes there until it owns the instances of the one it replaces
	// (TakeOver), which still writes path.
	aside string
	// released: the instances were handed to a new process, whose ledger
	// the file is now: this one writes nothing more.
	released bool
}

// Record is one process group in the ledger.
type Record struct {
	// Slot and Addr name the instance.
	Slot string `json:"slot"`
	Addr string `json:"addr"`
	// PGID is the process group, the command's PID.
	PGID int `json:"pgid"`
	// Start is when the command started, in clock ticks after boot.
	Start uint64 `json:"start"`
	// Marker is the VIPSWAP_RUN value of the run that started it (the
	// file's Marker when empty): an adopted instance keeps its own.
	Marker string `json:"marker,omitempty"`
	// Port, Command (before {port} and {version} are replaced) and
	// Version are what it runs: what a new process compares with its
	// configuration before it adopts it.
	Port    int      `json:"port,omitempty"`
	Command []string `json:"command,omitempty"`
	Version string   `json:"version,omitempty"`
}

// ledgerFile is the ledger's content on disk.
type ledgerFile struct {
	Boot   string   `json:"boot_id"`
	Marker string   `json:"marker"`
	Groups []Record `json:"groups"`
}

// OpenLedger returns the ledger kept in the file at path, for a new run.
// The file is not read until Reclaim nor written until an instance starts.
func OpenLedger(path string, log *slog.Logger) (*Ledger, error) {
	if log == nil {
		log = slog.Default()
	}
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return &Ledger{path: path, log: log, id: hex.EncodeToString(id), groups: make(map[int]Record)}, nil
}

// Path returns the ledger file's path.
func (l *Ledger) Path() string { return l.path }

// marker is the environment entry of this run's instances.
func (l *Ledger) marker() string { return markerEnv + "=" + l.id }

// Leftover is a process a previous run left behind.
type Leftover struct {
	Record
	// PID is the process.
	PID int
	// Stopped reports that Reclaim stopped it; false means it could not be
	// verified as vipswap's and was left alone.
	Stopped bool
}

// Reclaim reads the ledger a previous run left, stops the processes of
// its groups that are still alive and provably that run's (same boot, its
// marker in their environment; SIGTERM, then SIGKILL after stopTimeout),
// reports them, and leaves processes it cannot verify alone. A ledger from
// a clean run is empty; none at all is fine.
func (l *Ledger) Reclaim(stopTimeout time.Duration) ([]Leftover, error) {
	data, err := readRegular(l.path, maxLedger)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("instance ledger %s: %w: remove it if no instance of a previous vipswap run is still running", l.path, err)
	}
	var prev ledgerFile
	if err := json.Unmarshal(data, &prev); err != nil {
		// Written whole by rename, so only someone else could have made
		// it unreadable: say so, and do not guess.
		return nil, fmt.Errorf("instance ledger %s is unreadable (%v): remove it if no instance of a previous vipswap run is still running", l.path, err)
	}
	if prev.Boot != bootID() || prev.Marker == "" {
		return nil, l.write() // a reboot since: nothing can be left
	}
	left := l.stopVerified(prev.Groups, prev.Marker, nil, stopTimeout)
	return left, l.write()
}

// stopVerified stops the processes of the groups recs lists that are still
// alive and provably the recorded run's (its marker in their environment,
// the leader's start time), except the groups keep holds, and reports
// them all; fileMarker is the marker of records without their own.
func (l *Ledger) stopVerified(recs []Record, fileMarker string, keep map[int]bool, stopTimeout time.Duration) []Leftover {
	var left []Leftover
	var ours []proc
	for _, r := range recs {
		if keep[r.PGID] || r.PGID <= 1 {
			continue
		}
		m := r.Marker
		if m == "" {
			m = fileMarker
		}
		for _, p := range groupMembers(r.PGID) {
			lo := Leftover{Record: r, PID: p.pid}
			// The leader was recorded with its start time; a leader that
			// started at another time is another process reusing the PID.
			leaderReused := p.pid == r.PGID && r.Start != 0 && p.start != r.Start
			if m != "" && hasEnv(p.pid, markerEnv+"="+m) && !leaderReused && p.start >= r.Start {
				lo.Stopped = true
				ours = append(ours, p)
			}
			left = append(left, lo)
		}
	}
	for _, lo := range left {
		if lo.Stopped {
			l.log.Warn("stopping an instance a previous vipswap run left running", "slot", lo.Slot, "instance", lo.Addr, "pid", lo.PID, "pgid", lo.PGID)
		} else {
			l.log.Warn("a process in the group of an instance of a previous run is still running, but it cannot be verified as vipswap's: left alone",
				"slot", lo.Slot, "instance", lo.Addr, "pid", lo.PID, "pgid", lo.PGID)
		}
	}
	stopProcs(ours, stopTimeout)
	return left
}

// maxLedger bounds the ledger file read: it lists a few hundred groups
// at most.
const maxLedger = 1 << 20

// readRegular reads the file at path, which must be a regular file (a
// FIFO would block the read forever, a device such as /dev/zero never
// end) of at most limit bytes.
func readRegular(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// readFile reads and checks a ledger file: every record names a group and
// carries a marker (its own or the file's, filled in); the file is of
// this boot.
func readFile(path string) (ledgerFile, error) {
	var f ledgerFile
	data, err := readRegular(path, maxLedger)
	if err != nil {
		return f, fmt.Errorf("instance ledger %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("instance ledger %s is unreadable (%v)", path, err)
	}
	if f.Boot != bootID() {
		return f, fmt.Errorf("instance ledger %s is of another boot", path)
	}
	for i, r := range f.Groups {
		if r.PGID <= 1 || r.Slot == "" || r.Addr == "" {
			return f, fmt.Errorf("instance ledger %s: record %d names no instance", path, i+1)
		}
		if r.Marker == "" {
			f.Groups[i].Marker = f.Marker
		}
		if f.Groups[i].Marker == "" {
			return f, fmt.Errorf("instance ledger %s: record %d has no marker", path, i+1)
		}
	}
	return f, nil
}

// Records returns the groups the ledger file lists, each with its marker:
// in a new process, what the one it replaces runs. No file lists none.
func (l *Ledger) Records() ([]Record, error) {
	f, err := readFile(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return f.Groups, err
}

// WriteAside makes the ledger write path instead of its own file until
// TakeOver: a new process's, while the one it replaces still owns the
// file (should the new one be killed before it takes over, the old one
// stops what it started, ReclaimFile).
func (l *Ledger) WriteAside(path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.aside = path
}

// TakeOver writes the ledger to its own file and removes the one aside:
// for a new process that owns the instances now.
func (l *Ledger) TakeOver() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	aside := l.aside
	l.aside = ""
	err := l.writeLocked()
	if aside != "" {
		os.Remove(aside)
	}
	return err
}

// Release stops writing the file, which is the new process's now: for a
// process that handed its instances to a new one.
func (l *Ledger) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = true
}

// StopLeftovers stops the processes of recs (another run's records) that
// are still alive and provably that run's, but for the groups keep holds;
// see Reclaim.
func (l *Ledger) StopLeftovers(recs []Record, keep map[int]bool, stopTimeout time.Duration) []Leftover {
	return l.stopVerified(recs, "", keep, stopTimeout)
}

// ReclaimFile stops what the ledger file at path (a failed new process's,
// WriteAside) lists, but the instances this ledger lists (its own, which
// the failed process had adopted), and removes the file.
func (l *Ledger) ReclaimFile(path string, stopTimeout time.Duration) ([]Leftover, error) {
	f, err := readFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	defer os.Remove(path)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	keep := map[int]bool{}
	for _, r := range f.Groups {
		if own, ok := l.groups[r.PGID]; ok && own.Start == r.Start {
			keep[r.PGID] = true // this run's own (adopted by the failed process too)
		}
	}
	l.mu.Unlock()
	return l.stopVerified(f.Groups, "", keep, stopTimeout), nil
}

// stopProcs sends SIGTERM to each process, waits until all are gone, and
// sends SIGKILL to those left after limit. A process is gone when its PID
// no longer names a running process that started when it did.
func stopProcs(ps []proc, limit time.Duration) {
	alive := func(p proc) bool {
		q, ok := readProc(p.pid)
		return ok && q.start == p.start && q.state != 'Z' && q.state != 'X'
	}
	for _, p := range ps {
		signalProcess(p.pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	killed := false
	for {
		ps = slices.DeleteFunc(ps, func(p proc) bool { return !alive(p) })
		if len(ps) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if killed {
				return // SIGKILL sent; what remains is not ours to wait for
			}
			for _, p := range ps {
				signalProcess(p.pid, syscall.SIGKILL)
			}
			killed, deadline = true, time.Now().Add(5*time.Second)
		}
		<-tick.C
	}
}

// add records a started process group.
func (l *Ledger) add(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Marker == "" {
		r.Marker = l.id
	}
	l.groups[r.PGID] = r
	l.writeLocked()
}

// remove forgets a process group that is gone.
func (l *Ledger) remove(pgid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.groups, pgid)
	l.writeLocked()
}

// Close removes the ledger file: every instance has stopped. A ledger
// released to a new process leaves the file alone.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	if len(l.groups) > 0 {
		return l.writeLocked()
	}
	path := l.path
	if l.aside != "" {
		path = l.aside
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (l *Ledger) write() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeLocked()
}

// writeLocked replaces the file with the current groups: written to a
// temporary file, synced, renamed into place. A failure is logged: the
// ledger only helps a later run, it must never stop this one.
func (l *Ledger) writeLocked() error {
	if l.released {
		return nil
	}
	path := l.path
	if l.aside != "" {
		path = l.aside
	}
	f := ledgerFile{Boot: bootID(), Marker: l.id, Groups: make([]Record, 0, len(l.groups))}
	for _, r := range l.groups {
		f.Groups = append(f.Groups, r)
	}
	slices.SortFunc(f.Groups, func(a, b Record) int { return a.PGID - b.PGID })
	err := writeFile(path, f)
	if err != nil {
		l.log.Warn("could not write the instance ledger; a later run may not find instances this one leaves behind", "path", path, "err", err)
	}
	return err
}

func writeFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
