package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/launch"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/wire"
)

// How a vipswap replaces itself (vipswap upgrade, POST /v1/upgrade,
// SIGUSR2):
//
//  1. The old process releases the state file's lock (bbolt allows one
//     process; etcd needs nothing). Its data planes keep serving from the
//     routing table they hold; changes through its admin API fail as the
//     store's being unavailable until it exits or takes the file back.
//  2. It starts the new binary with tableflip, which passes it a duplicate
//     of every listening socket (prod, stage, admin, TLS or not: the TCP
//     socket under them), by name and address.
//  3. The new process opens the state, starts its controller and waits for
//     its first health round and for its data planes to apply the table
//     built after it (control.WaitFirstRound); only then does it accept on
//     the inherited sockets, and tell the old one it is ready.
//  4. The old process stops accepting (the sockets stay open in the new
//     one: a connection waiting in the backlog is the new one's to accept)
//     and finishes its requests in flight as a stop does, up to
//     proxy.shutdown_timeout, then exits.
//
// A new process that exits, or is not ready within the upgrade timeout
// (killed then), leaves the old one serving: it takes the state file back
// and the upgrade fails with the reason.
//
// tableflip starts os.Args[0] with this process's arguments. An upgrade
// to another file (--binary) sets os.Args[0] to it for the upgrade, and
// keeps it, so that the next upgrade, in the new process, starts what it
// runs.

// upgradeSignalName is the signal that upgrades a vipswap to the binary it was
// started as (the file at that path now).
const upgradeSignalName = "SIGUSR2"

// DefaultUpgradeTimeout bounds how long a new process may take to become
// ready before an upgrade gives up on it; it is also the most a process
// accepts (MaxUpgradeTimeout): with the checks before, an upgrade answers
// within the admin API's 30 seconds.
const (
	DefaultUpgradeTimeout = 15 * time.Second
	MaxUpgradeTimeout     = DefaultUpgradeTimeout
)

// tableflipParentEnv is the variable by which tableflip (v1.2.3) tells a
// process it was started by an upgrade.
const tableflipParentEnv = "TABLEFLIP_HAS_PARENT_7DIU3"

// handover is the process's part in upgrades.
type handover struct {
	upg     *tableflip.Upgrader
	timeout time.Duration

	sig      chan os.Signal // SIGUSR2
	mu       sync.Mutex     // one upgrade at a time
	upgraded chan struct{}  // closed when a new process took over
	note     *upgradeNote   // the upgrade that replaced this process, set before upgraded is closed
	pidFile  string         // where the new process writes its PID once ready ("" for none)

	// The managed instances' hand-over (adopt.go): in the old process,
	// the files given to tableflip by name and the release pipe's write
	// end; in the new one, the adoption under way until it owns them.
	added map[string]bool
	relW  *os.File
	adopt *adoption
}

// newHandover starts tableflip for this process: the sockets a parent
// passed, if one started it.
func newHandover(timeout time.Duration, pidFile string) (*handover, error) {
	if timeout <= 0 || timeout > MaxUpgradeTimeout {
		timeout = DefaultUpgradeTimeout
	}
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: timeout, PIDFile: pidFile})
	if err != nil {
		return nil, fmt.Errorf("upgrades: %w", err)
	}
	// tableflip marks the process it starts with this variable, read by
	// New: what this process starts in turn (managed instances, which may
	// use tableflip themselves) must not inherit it. (tableflip adds it
	// afresh to the next process it starts.)
	os.Unsetenv(tableflipParentEnv)
	h := &handover{upg: upg, timeout: timeout, pidFile: pidFile, upgraded: make(chan struct{}), sig: make(chan os.Signal, 1), added: map[string]bool{}}
	if len(upgradeSignals) > 0 { // none: Notify would take every signal
		signal.Notify(h.sig, upgradeSignals...)
	}
	return h, nil
}

// listenOn returns the listening socket for the listener name at addr: the
// one the process this one replaces passed on, or a new one. Every socket
// bind opens comes from here.
func (n *node) listenOn(name, addr string) (net.Listener, error) {
	if n.ho == nil {
		return n.listenTCP(name, addr)
	}
	// The name is part of the key: two listeners on port 0 are two
	// sockets, and a listener moved to another address gets a new one.
	key := name + "@" + addr
	ln, err := n.ho.upg.Listener("tcp", key)
	if err != nil {
		return nil, err
	}
	if ln != nil {
		return ln, nil
	}
	// A socket systemd handed over, or a new one; either is passed on
	// to the next process.
	ln, err = n.listenTCP(name, addr)
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("%s: %s is no TCP listener", name, addr)
	}
	if err := n.ho.upg.AddListener("tcp", key, tl); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// takingOver reports whether this process replaces another one.
func (n *node) takingOver() bool { return n.ho != nil && n.ho.upg.HasParent() }

// readyToServe waits, in a process that replaces another, until the
// routing is by health (see WaitFirstRound), bounded by the upgrade
// timeout: the old process serves meanwhile.
func (n *node) readyToServe(ctx context.Context) error {
	if !n.takingOver() {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, n.ho.timeout)
	defer cancel()
	if err := n.ctrl.WaitFirstRound(wctx); err != nil {
		return fmt.Errorf("taking over from the previous process: the first health round did not end: %w", err)
	}
	return nil
}

// ready tells the process this one replaces, if any, that it serves now.
func (n *node) ready() error {
	if n.ho == nil {
		return nil
	}
	if err := n.ho.upg.Ready(); err != nil {
		if !n.takingOver() || !n.parentGone() {
			return fmt.Errorf("telling the previous process this one is ready: %w", err)
		}
		// The previous process ended (a crash, kill -9) while this one
		// got ready: this one holds the sockets and the state, and is all
		// that is left to serve them. It goes on, as after a crash.
		n.log.Warn("the previous vipswap process ended before this one could tell it that it is ready (a crash, kill -9): this one serves on", "err", err)
	}
	if n.takingOver() {
		n.log.Info("took over from the previous process: it stops accepting and finishes its requests in flight")
		n.ownInstances()
		n.recordUpgrade(context.Background())
	}
	return nil
}

// parentGone reports whether the process this one replaces has exited
// (waiting a moment for it: its exit is seen through a pipe).
func (n *node) parentGone() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return !errors.Is(n.ho.upg.WaitForParent(ctx), context.DeadlineExceeded)
}

// replaced reports whether a new process took over from this one.
func (n *node) replaced() bool {
	if n.ho == nil {
		return false
	}
	select {
	case <-n.ho.upgraded:
		return true
	default:
		return false
	}
}

// upgradedC is closed when a new process took over (nil without
// upgrades: never).
func (n *node) upgradedC() <-chan struct{} {
	if n.ho == nil {
		return nil
	}
	return n.ho.upgraded
}

// stopHandover closes the sockets kept for a new process, at shutdown.
func (n *node) stopHandover() {
	if n.ho != nil {
		n.ho.upg.Stop()
	}
}

// drained, called once the requests in flight are finished at shutdown,
// notes them for the history entry when a new process replaced this one.
func (n *node) drained() {
	if n.ho == nil {
		return
	}
	select {
	case <-n.ho.upgraded:
		n.noteDrained(n.ho.note)
	default:
	}
}

// upgradeAPI is the admin API's Upgrade, nil without upgrades.
func (n *node) upgradeAPI() func(context.Context, wire.UpgradeRequest) (wire.UpgradeResult, error) {
	if n.ho == nil {
		return nil
	}
	return n.upgrade
}

// upgrade replaces this process with a new one running req.Binary (or the
// file this one was started as): see the top of this file.
func (n *node) upgrade(ctx context.Context, req wire.UpgradeRequest) (wire.UpgradeResult, error) {
	refuse := func(status int, format string, args ...any) (wire.UpgradeResult, error) {
		return wire.UpgradeResult{}, &api.Error{Status: status, Err: fmt.Errorf(format, args...)}
	}
	if !n.ho.mu.TryLock() {
		return refuse(http.StatusConflict, "an upgrade is already under way")
	}
	defer n.ho.mu.Unlock()
	binary, err := upgradeBinary(req.Binary)
	if err != nil {
		return refuse(http.StatusBadRequest, "%v", err)
	}
	if req.Binary != "" && !n.initial.AdminIsLoopback() && !n.allowRun() {
		return refuse(http.StatusForbidden, "binary: an upgrade to another file through an admin API that is not on loopback needs admin.allow_run: true")
	}
	select {
	case <-n.ho.upgraded:
		return refuse(http.StatusConflict, "this process was replaced already: it is finishing its requests in flight")
	default:
	}
	if groups := n.sup.current(); len(groups) > 0 && !launch.CanHandOver() {
		return refuse(http.StatusConflict, "managed instances (run:) are running and can be handed to a new process on Linux only: stop vipswap and start the new binary instead")
	}
	if n.takingOver() {
		// The process this one replaced is still finishing its requests:
		// tableflip refuses a new upgrade until it exits.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := n.ho.upg.WaitForParent(wctx)
		cancel()
		if err != nil && errors.Is(err, context.DeadlineExceeded) {
			return refuse(http.StatusConflict, "the previous vipswap process is still finishing its requests in flight: try again when it has exited")
		}
	}
	// The two checks of the new binary share 8 seconds: with the wait
	// for readiness, the upgrade answers within the admin API's 30.
	cctx, cancelChecks := context.WithTimeout(ctx, 8*time.Second)
	defer cancelChecks()
	newVersion, err := binaryVersion(cctx, binary)
	if err != nil {
		return refuse(http.StatusBadRequest, "%v", err)
	}
	// The new process reads the configuration file anew: one it would
	// refuse (edited since, or a key the new version no longer takes) is
	// named here, before anything is handed over.
	if err := binaryCheck(cctx, binary, n.path); err != nil {
		return refuse(http.StatusBadRequest, "%v; this one goes on serving", err)
	}
	if req.DryRun {
		return wire.UpgradeResult{OldVersion: n.version, NewVersion: newVersion, Binary: binary, OldPID: os.Getpid()}, nil
	}
	n.log.Info("upgrading: starting the new process", "binary", binary, "old_version", n.version, "new_version", newVersion, "actor", req.Actor)
	// No reload meanwhile: the managed instances are handed as they are.
	n.mu.Lock()
	defer n.mu.Unlock()
	note := n.beginNote(req, binary, newVersion)
	start := time.Now()
	held, err := n.holdInstances()
	if err != nil {
		n.recordFailedUpgrade(note, "could not hand the managed instances over: "+err.Error())
		return refuse(http.StatusInternalServerError, "could not hand the managed instances over: %v", err)
	}
	if err := n.releaseStore(); err != nil {
		n.resumeInstances(held)
		n.recordFailedUpgrade(note, "could not hand the state file over: "+err.Error())
		return refuse(http.StatusInternalServerError, "could not hand the state file over: %v", err)
	}
	prev := os.Args[0]
	os.Args[0] = binary
	err = n.ho.upg.Upgrade()
	took := time.Since(start)
	if err == nil {
		n.releaseInstances(held)
	}
	if err != nil {
		os.Args[0] = prev
		n.resumeInstances(held)
		if rerr := n.reacquireStore(); rerr != nil {
			n.log.Error("the upgrade failed and the state file could not be taken back: changes fail until vipswap restarts", "err", rerr)
		}
		reason := upgradeFailure(err, n.ho.timeout)
		n.recordFailedUpgrade(note, reason)
		n.log.Error("upgrade failed: this process goes on serving", "binary", binary, "reason", reason)
		return refuse(http.StatusBadGateway, "the new vipswap (%s) did not take over: %s; this one goes on serving", binary, reason)
	}
	n.log.Info("upgraded: the new process is ready; this one stops accepting and finishes its requests in flight",
		"new_version", newVersion, "seconds", took.Seconds(), "limit", n.initial.Proxy.ShutdownTimeout)
	n.ho.note = note
	n.tellSystemdNewMain()
	close(n.ho.upgraded)
	return wire.UpgradeResult{OldVersion: n.version, NewVersion: newVersion, Binary: binary, OldPID: os.Getpid(), Seconds: took.Seconds()}, nil
}

// tellSystemdNewMain tells systemd, when it started this process with
// NOTIFY_SOCKET (Type=notify), that the new process is the service's main
// process now (MAINPID=), read from the PID file it wrote when it became
// ready. This process is still the main one, so systemd takes it with the
// default NotifyAccess=main; without it systemd would count the old
// process's exit as the service's end and stop the new one.
func (n *node) tellSystemdNewMain() {
	if notifySocket == "" || n.ho.pidFile == "" {
		return
	}
	raw, err := os.ReadFile(n.ho.pidFile)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err == nil && (perr != nil || pid <= 0) {
		err = fmt.Errorf("%s holds no PID", n.ho.pidFile)
	}
	if err == nil {
		err = sdNotify(notifySocket, "MAINPID="+strconv.Itoa(pid))
	}
	if err != nil {
		n.log.Warn("could not tell systemd the new process's PID (MAINPID=)", "err", err)
	}
}

// allowRun is admin.allow_run, as the last reload left it.
func (n *node) allowRun() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg.Admin.AllowRun
}

// releaseStore lets the new process open the state file (nothing to do
// with etcd).
func (n *node) releaseStore() error {
	if b, ok := n.st.Store.(*bolt.Store); ok {
		return b.Release()
	}
	return nil
}

// reacquireStore takes the state file back after a failed upgrade.
func (n *node) reacquireStore() error {
	if b, ok := n.st.Store.(*bolt.Store); ok {
		if err := b.Reacquire(); err != nil {
			return err
		}
		n.ctrl.StoreAnswers()
	}
	return nil
}

// upgradeFailure says in words why tableflip's upgrade failed.
func upgradeFailure(err error, timeout time.Duration) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "timed out"):
		return fmt.Sprintf("it was not ready within %s and was killed", timeout)
	case strings.Contains(msg, "exited"):
		if i := strings.LastIndex(msg, "exited"); i >= 0 {
			return "it " + msg[i:] + " before it was ready (its log says why)"
		}
	case strings.Contains(msg, "terminating"):
		return "vipswap is stopping"
	}
	return msg
}

// upgradeBinary returns the file an upgrade starts: path, which must be
// absolute and an executable regular file, or the one this process was
// started as.
func upgradeBinary(path string) (string, error) {
	if path == "" {
		p, err := exec.LookPath(os.Args[0])
		if err != nil {
			return "", fmt.Errorf("the vipswap binary this process was started as (%s) is not there any more: %v", os.Args[0], err)
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return p, nil
	}
	if len(path) > 4096 || strings.ContainsRune(path, 0) {
		return "", errors.New("binary: not a file name")
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("binary: %q is not an absolute path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("binary: %v", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("binary: %s is not an executable file", path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("binary: %s is writable by other users than its owner: refused", path)
	}
	if err := checkBinaryOwner(path, fi); err != nil {
		return "", err
	}
	return filepath.Clean(path), nil
}

// binaryVersion runs `binary version` (a few seconds at most): the
// version an upgrade goes to, and a first check that the file is a
// vipswap that runs here (8 seconds: a loaded machine may be slow to start
// a program).
func binaryVersion(ctx context.Context, binary string) (string, error) {
	vctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(vctx, binary, "version")
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if vctx.Err() != nil {
		return "", fmt.Errorf("%s version: no answer within 8s", binary)
	}
	if err != nil {
		return "", fmt.Errorf("%s version: %v: is it a vipswap for this machine?", binary, err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "vipswap ")
	if !ok || len(v) > 200 || strings.ContainsAny(v, "\n\r") {
		return "", fmt.Errorf("%s version: answered %.60q, not a vipswap version", binary, out)
	}
	return v, nil
}

// binaryCheck runs `binary check -c path`: the configuration file as
// the new process will read it. Its complaint, one line, is the error.
func binaryCheck(ctx context.Context, binary, path string) error {
	if path == "" {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, binary, "check", "-c", path)
	cmd.WaitDelay = time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &limitedWriter{w: &out, n: 4096}
	err := cmd.Run()
	if cctx.Err() != nil {
		return fmt.Errorf("%s check -c %s: no answer within 8s (with version)", binary, path)
	}
	if err != nil {
		msg, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		msg = strings.TrimPrefix(msg, "vipswap check: ")
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("the new vipswap refuses the configuration file: %.300s", msg)
	}
	return nil
}

// limitedWriter keeps the first n bytes written to it, and takes the rest
// without keeping it.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// upgradeSignal receives SIGUSR2 (nil without upgrades: never).
func (n *node) upgradeSignal() <-chan os.Signal {
	if n.ho == nil {
		return nil
	}
	return n.ho.sig
}

// upgradeOnSignal upgrades to the file this process was started as, on
// SIGUSR2; the log says how it went.
func (n *node) upgradeOnSignal(ctx context.Context) {
	if _, err := n.upgrade(ctx, wire.UpgradeRequest{ChangeRequest: wire.ChangeRequest{Actor: upgradeSignalName}}); err != nil {
		n.log.Error("upgrade on "+upgradeSignalName+" refused", "err", err)
	}
}

// The history entry of an upgrade (operation "upgrade") is recorded by the
// new process, which holds the store once it is ready; the old one
// records a failed upgrade itself, having taken the store back. The two
// processes share a note, a small file beside the state (its local base +
// ".upgrade"): the old one writes it before it starts the new one, and
// again, with what it served from the upgrade's start to its exit, once
// it has finished its requests in flight. The new one attaches to the
// entry, as its measurement, what both served and failed on prod from
// the upgrade's start until the old one exited.

// upgradeNote is that file's content.
type upgradeNote struct {
	Started    time.Time `json:"started"`
	Actor      string    `json:"actor"`
	Reason     string    `json:"reason,omitempty"`
	OldVersion string    `json:"old_version"`
	NewVersion string    `json:"new_version"`
	Binary     string    `json:"binary"`
	OldPID     int       `json:"old_pid"`
	// Drained is set by the old process once it finished its requests in
	// flight, with what it served and failed on prod since Started.
	Drained bool      `json:"drained,omitempty"`
	Ended   time.Time `json:"ended,omitzero"`
	Served  uint64    `json:"served"`
	Failed  uint64    `json:"failed"`
	// base is the old process's prod counts at Started.
	base [2]uint64
}

// upgradeNotePath is where the note is kept.
func (n *node) upgradeNotePath() string { return n.initial.State.LocalBase() + ".upgrade" }

// prodCounts returns what this process's proxy served and failed on prod.
func (n *node) prodCounts() (served, failed uint64) {
	for _, c := range n.px.Counters(route.Prod) {
		for _, k := range c.Classes {
			served += k
		}
		failed += c.Failed
	}
	return served, failed
}

// writeNote replaces the note file.
func (n *node) writeNote(note *upgradeNote) error {
	raw, err := json.Marshal(note)
	if err != nil {
		return err
	}
	path := n.upgradeNotePath()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readNote reads the note file (bounded: it is small).
func (n *node) readNote() (*upgradeNote, error) {
	f, err := openRegular(n.upgradeNotePath())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var note upgradeNote
	if err := json.NewDecoder(io.LimitReader(f, 64<<10)).Decode(&note); err != nil {
		return nil, fmt.Errorf("upgrade note %s: %w", n.upgradeNotePath(), err)
	}
	return &note, nil
}

// beginNote writes the note of an upgrade that starts now.
func (n *node) beginNote(req wire.UpgradeRequest, binary, newVersion string) *upgradeNote {
	served, failed := n.prodCounts()
	note := &upgradeNote{Started: time.Now().UTC(), Actor: req.Actor, Reason: req.Reason, OldVersion: n.version,
		NewVersion: newVersion, Binary: binary, OldPID: os.Getpid(), base: [2]uint64{served, failed}}
	if err := n.writeNote(note); err != nil {
		n.log.Warn("upgrade: could not write the note for the history entry", "err", err)
	}
	return note
}

// recordFailedUpgrade records an upgrade that did not take over.
func (n *node) recordFailedUpgrade(note *upgradeNote, reason string) {
	os.Remove(n.upgradeNotePath())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	took := time.Since(note.Started)
	e := upgradeEntry(note, took)
	e.Result, e.Error = store.Failed, reason
	// No process took over: this one goes on (not "process N -> N").
	e.Changes[2] = fmt.Sprintf("process %d goes on serving; the new one gave up after %s", note.OldPID, took.Round(time.Millisecond))
	if _, err := n.st.Record(ctx, e); err != nil {
		n.log.Warn("could not record the failed upgrade in the history", "err", err)
	}
}

// upgradeEntry is the history entry of the upgrade note describes.
func upgradeEntry(note *upgradeNote, ready time.Duration) store.Entry {
	return store.Entry{
		Time: note.Started, Actor: note.Actor, Operation: "upgrade", Reason: note.Reason, Result: store.Applied,
		Changes: []string{
			fmt.Sprintf("vipswap %s -> %s", note.OldVersion, note.NewVersion),
			"binary " + note.Binary,
			fmt.Sprintf("process %d -> %d, ready in %s", note.OldPID, os.Getpid(), ready.Round(time.Millisecond)),
		},
	}
}

// noteDrained, in a process that was replaced, adds to the note what it
// served since the upgrade began, once it finished its requests in
// flight.
func (n *node) noteDrained(note *upgradeNote) {
	served, failed := n.prodCounts()
	note.Drained, note.Ended = true, time.Now().UTC()
	// (Counters may age a removed instance's out: never below zero.)
	note.Served, note.Failed = served-min(served, note.base[0]), failed-min(failed, note.base[1])
	if err := n.writeNote(note); err != nil {
		n.log.Warn("upgrade: could not write what this process served for the history entry", "err", err)
	}
}

// recordUpgrade, in a process that replaced another, records the
// upgrade's history entry, and once the old process has exited (or its
// shutdown limit and a margin have passed), its measurement.
func (n *node) recordUpgrade(ctx context.Context) {
	note, err := n.readNote()
	if err != nil {
		n.log.Warn("upgrade: no note from the previous process: the history entry is not recorded", "err", err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	e, err := n.st.Record(rctx, upgradeEntry(note, time.Since(note.Started)))
	cancel()
	if err != nil {
		n.log.Warn("could not record the upgrade in the history", "err", err)
		return
	}
	n.log.Info("upgrade recorded", "history_id", e.ID, "old_version", note.OldVersion, "new_version", n.version)
	done := make(chan struct{})
	go func() {
		defer close(done)
		wctx, cancel := context.WithTimeout(ctx, n.initial.Proxy.ShutdownTimeout+10*time.Second)
		n.ho.upg.WaitForParent(wctx)
		cancel()
		final, err := n.readNote()
		if err != nil {
			final = note
		}
		os.Remove(n.upgradeNotePath())
		served, failed := n.prodCounts()
		m := store.Measurement{Served: served + final.Served, Failed: failed + final.Failed,
			Start: note.Started, End: time.Now().UTC(), Complete: final.Drained}
		if final.Drained {
			m.Drained = final.Ended.Sub(note.Started)
		}
		mctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.st.Measure(mctx, e.ID, m); err != nil {
			n.log.Warn("could not record the upgrade's measurement", "history_id", e.ID, "err", err)
		}
	}()
	n.onClose(func() { <-done })
}
