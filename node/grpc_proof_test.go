package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/vipswap/vipswap/internal/grpctest"
	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// proofSwaps is how many swaps the proof makes under load.
const proofSwaps = 20

// proofStreamLength is how long the proof's long streams last at least:
// long enough to span the swaps in the normal suite. VIPSWAP_LONG_STREAM
// (a duration: VIPSWAP_LONG_STREAM=3m) makes them last longer; the swaps
// are spread over the stream's life either way.
func proofStreamLength(t *testing.T) time.Duration {
	v := os.Getenv("VIPSWAP_LONG_STREAM")
	if v == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 5*time.Second {
		t.Fatalf("VIPSWAP_LONG_STREAM=%q: want a duration of at least 5s, such as 3m", v)
	}
	return d
}

// TestGRPCSwapsAndRollback is the proof that vipswap carries HTTP/2 and
// gRPC through swaps and a rollout that rolls back: two slots of two
// grpc-go instances each (health.type grpc), under load from grpc-go
// clients (unary calls) and net/http HTTP/2 clients (the same calls,
// framed by hand), with a long bidirectional stream opened on each slot,
// sending a message every 50 ms.
//
//   - 20 swaps, each waited for until in force, spread over the streams'
//     life: no call fails; every call made while a swap is in force lands
//     on its slot; a stream opened before each swap answers from its
//     instance after it and ends cleanly, and then the old slot holds
//     nothing in flight but its long stream.
//   - A rollout to the standby slot, whose instances answer every fifth
//     unary call with UNAVAILABLE or INTERNAL (their own status), is
//     rolled back by its analysis: the only failed calls are those
//     injected errors, each one the clients saw counted by an instance
//     (none is vipswap's own UNAVAILABLE), and the calls made after the
//     rollback all land on the stable slot. A stream opened on the canary
//     during the rollout stays on it through the rollback and ends
//     cleanly.
//   - The long streams, opened before the swaps, end on the slot they
//     began on, cleanly, and the slots' in-flight counts go to 0. vipswap
//     counted no failed request, the injected errors as the instances'
//     errors, and no swap's measurement holds a failed request.
//
// It runs over h2c (an h2c prod listener, h2c instances) and over TLS (a
// TLS prod listener offering h2, gRPC clients over TLS, instances reached
// over h2 with the slot's CA). The long streams last 20 s (or until the
// swaps and the rollout are done, if that takes longer);
// VIPSWAP_LONG_STREAM sets another length: VIPSWAP_LONG_STREAM=3m for
// streams of a few minutes, the swaps then about 5 s apart (go test's
// -timeout must leave room for a length beyond about 6 minutes).
func TestGRPCSwapsAndRollback(t *testing.T) {
	length := proofStreamLength(t)
	for _, overTLS := range []bool{false, true} {
		name := "h2c"
		if overTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			proveGRPC(t, overTLS, length)
		})
	}
}

// proofRig is a node with two slots of gRPC instances, and how to reach
// its prod listener.
type proofRig struct {
	n       *node
	servers map[string][]*grpctest.Server // by slot
	slotOf  map[string]string             // instance name -> slot
	dial    func() *grpc.ClientConn
	h2      *http.Client // HTTP/2 to prod, no HTTP/1.1
	h2URL   string       // prod's URL of the unary method
}

// startProofRig starts the rig: over TLS (listener and instances) or h2c.
func startProofRig(t *testing.T, overTLS bool) *proofRig {
	dir := t.TempDir()
	rig := &proofRig{servers: map[string][]*grpctest.Server{}, slotOf: map[string]string{}}
	var instTLS *tls.Config
	var listenerCert tlstest.Cert
	slotExtra := "    protocol: h2c\n"
	prod := "  prod:\n    addr: 127.0.0.1:0\n    h2c: true\n"
	if overTLS {
		listenerCert = tlstest.Valid(t, dir, "127.0.0.1")
		instCert := tlstest.Valid(t, dir, "grpc.internal")
		instTLS = &tls.Config{Certificates: []tls.Certificate{instCert.TLS}}
		slotExtra = "    protocol: h2\n    tls: {ca: grpc.internal.crt, server_name: grpc.internal}\n"
		prod = "  prod:\n    addr: 127.0.0.1:0\n    http2: true\n    tls:\n      certs:\n        - {cert: 127.0.0.1.crt, key: 127.0.0.1.key}\n"
	}
	var slots []string
	for _, slot := range []string{"blue", "green"} {
		var addrs []string
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("%c%d", slot[0], i)
			s := grpctest.Start(t, name, instTLS, slot)
			rig.servers[slot] = append(rig.servers[slot], s)
			rig.slotOf[name] = slot
			addrs = append(addrs, s.Addr)
		}
		slots = append(slots, staticSlot(slot, addrs...)+slotExtra)
	}
	path := writeConfig(t, dir, slots...)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for _, r := range [][2]string{
		{"  prod: 127.0.0.1:0\n", prod},
		{"  interval: 20ms\n  timeout: 1s\n  rise: 1\n  fall: 1\n", "  interval: 100ms\n  timeout: 2s\n  rise: 1\n  fall: 3\n  type: grpc\n"},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("the test configuration has no %q", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	// The analysis judges a canary over 2 s from 20 requests, at most 1 %
	// errors, as the process tests' rollouts do.
	text += "analysis:\n  window: 2s\n  min_requests: 20\n  max_error_rate: 0.01\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	rig.n, _ = startNode(t, path)

	addr := rig.n.prodLn.Addr().String()
	creds := insecure.NewCredentials()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	rig.h2URL = "http://" + addr + grpctest.Unary
	if overTLS {
		creds = credentials.NewTLS(&tls.Config{RootCAs: listenerCert.Pool()})
		tr.TLSClientConfig = &tls.Config{RootCAs: listenerCert.Pool()}
		tr.Protocols.SetHTTP2(true)
		rig.h2URL = "https://" + addr + grpctest.Unary
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true) // prior knowledge
	}
	t.Cleanup(tr.CloseIdleConnections)
	rig.h2 = &http.Client{Transport: tr, Timeout: time.Minute}
	rig.dial = func() *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	return rig
}

// unary makes one unary call of msg over cc and returns the instance that
// answered.
func unary(ctx context.Context, cc *grpc.ClientConn, msg string) (string, error) {
	in, out := []byte(msg), []byte(nil)
	if err := cc.Invoke(ctx, grpctest.Unary, &in, &out, grpc.CallContentSubtype(grpctest.Codec)); err != nil {
		return "", err
	}
	return answeredBy(string(out), msg)
}

// answeredBy returns the instance that answered "NAME: msg".
func answeredBy(answer, msg string) (string, error) {
	inst, echoed, ok := strings.Cut(answer, ": ")
	if !ok || echoed != msg {
		return "", fmt.Errorf("answer %q to %q", answer, msg)
	}
	return inst, nil
}

// grpcFrame is msg as one uncompressed gRPC message.
func grpcFrame(msg string) []byte {
	f := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(f[1:], uint32(len(msg)))
	return append(f, msg...)
}

// plainUnary makes the unary call of msg as a plain HTTP/2 request (gRPC
// framed by hand, over net/http) and returns the instance that answered;
// a gRPC status other than OK comes back as a status error.
func plainUnary(ctx context.Context, c *http.Client, target, msg string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(grpcFrame(msg)))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/grpc+"+grpctest.Codec)
	req.Header.Set("Te", "trailers")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		return "", fmt.Errorf("%s %s: %q", resp.Proto, resp.Status, body)
	}
	code, message := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if code == "" { // trailers-only
		code, message = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	if code != "0" {
		n, err := strconv.Atoi(code)
		if err != nil {
			return "", fmt.Errorf("grpc-status %q", code)
		}
		if m, err := url.PathUnescape(message); err == nil {
			message = m
		}
		return "", status.Error(codes.Code(n), message)
	}
	if len(body) < 5 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return "", fmt.Errorf("answer %q is not one gRPC message", body)
	}
	return answeredBy(string(body[5:]), msg)
}

// proofRouting tells the load which slot new calls must reach: seq is
// odd while prod changes (a swap being made, a rollout running) and want
// then means nothing; a call checks where it landed only if seq was the
// same, and even, when it began and when it ended.
type proofRouting struct {
	seq  atomic.Uint64
	want atomic.Pointer[string]
	// phase is 0 before the canary injects errors, 1 while it may, 2
	// after the rollback is in force: a call that overlapped phase 1 may
	// fail with one of its injected errors.
	phase atomic.Int32
}

// changing marks the start of a change of prod.
func (r *proofRouting) changing() { r.seq.Add(1) }

// settled marks prod as all on slot, in force.
func (r *proofRouting) settled(slot string) {
	r.want.Store(&slot)
	r.seq.Add(1)
}

// proofLedger counts what the clients saw.
type proofLedger struct {
	answered  atomic.Int64 // calls answered OK
	checked   atomic.Int64 // answered while a swap was in force all along, so checked against its slot
	misrouted atomic.Int64 // of those, answered by another slot
	injected  atomic.Int64 // the canary's injected errors, seen in the rollout
	own       atomic.Int64 // vipswap's own UNAVAILABLE answers
	failed    atomic.Int64 // every failed call but the injected errors
	mu        sync.Mutex
	first     []string // the first few failures and misroutes
	slowest   time.Duration
	slow      int64
	total     time.Duration
}

// took records a call's duration.
func (l *proofLedger) took(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slowest = max(l.slowest, d)
	if d > 100*time.Millisecond {
		l.slow++
	}
	l.total += d
}

func (l *proofLedger) note(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.first) < 10 {
		l.first = append(l.first, fmt.Sprintf(format, args...))
	}
}

// call makes one call with do, and counts how it went.
func (l *proofLedger) call(r *proofRouting, rig *proofRig, canary string, do func() (string, error)) {
	seq := r.seq.Load()
	want := r.want.Load()
	began := r.phase.Load()
	t0 := time.Now()
	inst, err := do()
	l.took(time.Since(t0))
	if err != nil {
		mayFail := began <= 1 && r.phase.Load() >= 1
		s, _ := status.FromError(err)
		inj, ok := strings.CutSuffix(s.Message(), ": "+grpctest.Injected)
		switch {
		case mayFail && ok && rig.slotOf[inj] == canary && (s.Code() == codes.Unavailable || s.Code() == codes.Internal):
			l.injected.Add(1)
			return
		case s.Code() == codes.Unavailable && strings.HasPrefix(s.Message(), "vipswap"):
			l.own.Add(1)
		}
		l.failed.Add(1)
		l.note("call failed: %v", err)
		return
	}
	slot, known := rig.slotOf[inst]
	if !known {
		l.failed.Add(1)
		l.note("answered by unknown instance %q", inst)
		return
	}
	l.answered.Add(1)
	if seq%2 == 0 && want != nil && r.seq.Load() == seq {
		l.checked.Add(1)
		if slot != *want {
			l.misrouted.Add(1)
			l.note("a call made while prod was all on %s was answered by %s", *want, inst)
		}
	}
}

// proofStream is a bidirectional stream that echoes a message every 50 ms
// and checks every echo comes from the instance that answered the first.
type proofStream struct {
	st   grpc.ClientStream
	inst string // the instance that answers it
	id   string
	sent int
}

// openProofStream opens a stream over cc and returns it once its first
// echo came back.
func openProofStream(ctx context.Context, cc *grpc.ClientConn, id string) (*proofStream, error) {
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, grpctest.Bidi, grpc.CallContentSubtype(grpctest.Codec))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", id, err)
	}
	s := &proofStream{st: st, id: id}
	if s.inst, err = s.echo(); err != nil {
		return nil, err
	}
	return s, nil
}

// echo sends one message and returns the instance that echoed it, or an
// error if it is not the stream's instance.
func (s *proofStream) echo() (string, error) {
	s.sent++
	msg := fmt.Sprintf("%s-%d", s.id, s.sent)
	in, out := []byte(msg), []byte(nil)
	if err := s.st.SendMsg(&in); err != nil {
		return "", fmt.Errorf("stream %s, message %d: send: %w", s.id, s.sent, err)
	}
	if err := s.st.RecvMsg(&out); err != nil {
		return "", fmt.Errorf("stream %s, message %d: receive: %w", s.id, s.sent, err)
	}
	inst, err := answeredBy(string(out), msg)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", s.id, err)
	}
	if s.inst != "" && inst != s.inst {
		return inst, fmt.Errorf("stream %s, message %d: answered by %s, it began on %s", s.id, s.sent, inst, s.inst)
	}
	return inst, nil
}

// end ends the client's side and expects the stream to end cleanly.
func (s *proofStream) end() error {
	if err := s.st.CloseSend(); err != nil {
		return fmt.Errorf("stream %s: close: %w", s.id, err)
	}
	var out []byte
	if err := s.st.RecvMsg(&out); err != io.EOF {
		return fmt.Errorf("stream %s, after %d messages: ended with %v, want a clean end", s.id, s.sent, err)
	}
	return nil
}

// keep echoes a message every 50 ms until end is closed, then ends the
// stream.
func (s *proofStream) keep(end <-chan struct{}) error {
	tick := time.NewTicker(50 * time.Millisecond) // pacing the messages
	defer tick.Stop()
	for {
		select {
		case <-end:
			return s.end()
		case <-tick.C:
			if _, err := s.echo(); err != nil {
				return err
			}
		}
	}
}

// slotInFlight returns slot's prod requests in flight, as status says.
func slotInFlight(n *node, slot string) int64 {
	for _, s := range n.ctrl.Status().Slots {
		if s.Name == slot {
			return s.InFlight.Prod
		}
	}
	return -1
}

// openEchoes returns the echo calls running on slot's instances.
func (rig *proofRig) openEchoes(slot string) int64 {
	var open int64
	for _, s := range rig.servers[slot] {
		open += s.Open.Load()
	}
	return open
}

// waitEvent waits up to timeout for an event after seq that match
// accepts.
func waitEvent(t *testing.T, n *node, seq uint64, timeout time.Duration, match func(wire.Event) bool) wire.Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		evs, next := n.ctrl.Events(seq)
		for _, e := range evs.Events {
			if match(e) {
				return e
			}
		}
		seq = evs.Next
		select {
		case <-next:
		case <-deadline.C:
			t.Fatalf("no awaited event within %s", timeout)
		}
	}
}

func proveGRPC(t *testing.T, overTLS bool, length time.Duration) {
	rig := startProofRig(t, overTLS)
	n := rig.n
	ctx, cancel := context.WithTimeout(context.Background(), length+3*time.Minute)
	defer cancel()
	began := time.Now()

	cc := rig.dial()
	vstest.WaitFor(t, 30*time.Second, func() error {
		for _, s := range n.ctrl.Status().Slots {
			if s.Routable != 2 {
				return fmt.Errorf("%s: %d of 2 instances routable", s.Name, s.Routable)
			}
		}
		inst, err := unary(ctx, cc, "hello")
		if err == nil && rig.slotOf[inst] != "blue" {
			err = fmt.Errorf("answered by %s, want blue", inst)
		}
		return err
	})

	// The load: 8 unary grpc-go callers over 4 connections, 2 callers
	// of short streams, 2 net/http HTTP/2 callers, each at most a call
	// every 2 ms.
	var r proofRouting
	r.changing()
	r.settled("blue")
	var l proofLedger
	canary := "green"
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	caller := func(id string, do func(msg string) (string, error)) {
		load.Go(func() {
			pace := time.NewTicker(2 * time.Millisecond)
			defer pace.Stop()
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				case <-pace.C:
				}
				msg := fmt.Sprintf("%s-%d", id, i)
				l.call(&r, rig, canary, func() (string, error) { return do(msg) })
			}
		})
	}
	for c := range 4 {
		conn := rig.dial()
		for g := range 2 {
			caller(fmt.Sprintf("u%d.%d", c, g), func(msg string) (string, error) { return unary(ctx, conn, msg) })
		}
	}
	// Short streams opened and ended all along, racing the swaps: each
	// stays on its instance (three echoes) and ends cleanly.
	var churned atomic.Int64 // such streams that went well
	churnConn := rig.dial()
	for g := range 2 {
		caller(fmt.Sprintf("s%d", g), func(msg string) (string, error) {
			s, err := openProofStream(ctx, churnConn, msg)
			if err != nil {
				return "", err
			}
			for range 2 {
				if _, err := s.echo(); err != nil {
					return "", err
				}
			}
			if err := s.end(); err != nil {
				return "", err
			}
			churned.Add(1)
			return s.inst, nil
		})
	}
	var plain atomic.Int64 // calls over net/http answered OK
	for g := range 2 {
		caller(fmt.Sprintf("h%d", g), func(msg string) (string, error) {
			inst, err := plainUnary(ctx, rig.h2, rig.h2URL, msg)
			if err == nil {
				plain.Add(1)
			}
			return inst, err
		})
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(stopLoad)
			load.Wait()
		}
	}
	defer stop()

	// The long streams: one on blue now, one on green after the first
	// swap. They end when endStreams closes.
	streamConn := rig.dial()
	endStreams := make(chan struct{})
	var streams sync.WaitGroup
	var long []*proofStream
	longErrs := make([]error, 2)
	startLong := func(i int, want string) {
		s, err := openProofStream(ctx, streamConn, fmt.Sprintf("long%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if rig.slotOf[s.inst] != want {
			t.Fatalf("long stream %d opened on %s, want %s, the active slot", i, s.inst, want)
		}
		long = append(long, s)
		streams.Go(func() { longErrs[i] = s.keep(endStreams) })
	}
	endedStreams := false
	defer func() {
		if !endedStreams {
			close(endStreams)
			streams.Wait()
		}
	}()
	startLong(0, "blue")

	waitChecked := func(what string, more int64) {
		t.Helper()
		target := l.checked.Load() + more
		vstest.WaitFor(t, time.Minute, func() error {
			if got := l.checked.Load(); got < target {
				return fmt.Errorf("%s: %d calls checked, want %d", what, got, target)
			}
			return nil
		})
	}

	// 20 swaps, spread over the long streams' first 60 %.
	pace := time.NewTicker(length * 6 / 10 / proofSwaps) // pacing the swaps over the streams' life
	defer pace.Stop()
	shortConn := rig.dial()
	active, standby := "blue", "green"
	for i := 1; i <= proofSwaps; i++ {
		select {
		case <-pace.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		waitChecked(fmt.Sprintf("before swap %d", i), 20)
		short, err := openProofStream(ctx, shortConn, fmt.Sprintf("short%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if rig.slotOf[short.inst] != active {
			t.Fatalf("before swap %d: a stream opened on %s, want %s", i, short.inst, active)
		}
		r.changing()
		res, err := n.ctrl.Swap(ctx, wire.ChangeRequest{Reason: fmt.Sprintf("proof swap %d", i)})
		if err != nil || !res.Applied || res.To != standby {
			t.Fatalf("swap %d: %+v %v, want %s active", i, res, err, standby)
		}
		// Swap returns once the change is in force on the proxy.
		if st := n.ctrl.Status(); st.Active != standby || st.Listeners[0].Weights[standby] != 100 {
			t.Fatalf("after swap %d: status says active %s, prod %v", i, st.Active, st.Listeners[0].Weights)
		}
		active, standby = standby, active
		r.settled(active)
		// The stream opened before the swap stays on its instance, and
		// ends cleanly.
		if _, err := short.echo(); err != nil {
			t.Fatalf("after swap %d: %v", i, err)
		}
		if err := short.end(); err != nil {
			t.Fatalf("after swap %d: %v", i, err)
		}
		if i == 1 {
			startLong(1, active)
		}
		// Then the old slot holds its long stream alone.
		vstest.WaitFor(t, 30*time.Second, func() error {
			if in, open := slotInFlight(n, standby), rig.openEchoes(standby); in != 1 || open != 1 {
				return fmt.Errorf("after swap %d: %s has %d requests in flight and %d streams open on its instances, want 1 (its long stream)", i, standby, in, open)
			}
			return nil
		})
		// New calls land on the new active slot (l.call checks them).
		waitChecked(fmt.Sprintf("after swap %d", i), 20)
	}
	pace.Stop()
	swapsDone := time.Since(began)
	if l.failed.Load() != 0 || l.misrouted.Load() != 0 {
		t.Fatalf("%d swaps: %d calls failed, %d misrouted; first: %q", proofSwaps, l.failed.Load(), l.misrouted.Load(), l.first)
	}
	if active != "blue" {
		t.Fatalf("after an even number of swaps %s is active", active)
	}

	// The rollout to green, whose instances then fail every fifth unary
	// call: first a stream on the canary, to see it through the rollback.
	r.changing()
	r.phase.Store(1)
	seq := n.ctrl.LastEvent()
	rolloutStart := time.Now()
	res, err := n.ctrl.StartRolloutRequest(ctx, wire.RolloutRequest{To: canary, Steps: []float64{20, 50, 100}, Interval: "1m",
		ChangeRequest: wire.ChangeRequest{Reason: "proof rollout"}})
	if err != nil || !res.Applied {
		t.Fatalf("rollout: %+v %v", res, err)
	}
	var onCanary *proofStream
	for i := 0; onCanary == nil; i++ {
		if i == 50 { // 20 % of new requests go to the canary, by a deterministic draw
			t.Fatal("50 streams opened in the rollout's first step, none on the canary")
		}
		s, err := openProofStream(ctx, shortConn, fmt.Sprintf("rollout%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if rig.slotOf[s.inst] == canary {
			onCanary = s
		} else if err := s.end(); err != nil {
			t.Fatal(err)
		}
	}
	rig.servers[canary][0].Fail(codes.Unavailable, 5)
	rig.servers[canary][1].Fail(codes.Internal, 5)
	ended := waitEvent(t, n, seq, time.Minute, func(e wire.Event) bool { return e.Kind == wire.EventRollout })
	if ended.Outcome != "aborted" || ended.Slot != canary || ended.Active != "blue" {
		t.Fatalf("the rollout ended %+v, want aborted back to blue", ended)
	}
	rolledBack := time.Since(rolloutStart)
	if rs := n.ctrl.RolloutStatus(); rs.Running || rs.Weights["blue"] != 100 {
		t.Fatalf("after the rollback: rollout running %v, prod %v", rs.Running, rs.Weights)
	}
	h, err := n.ctrl.History(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if e := h[0]; e.Operation != "abort" || e.Actor != "rollout" || e.From != canary || e.To != "blue" ||
		!strings.Contains(strings.Join(e.Changes, " "), "analysis: error rate") {
		t.Fatalf("newest history entry %+v, want the automatic abort with its figures", e)
	}
	// The abort's table is in force once a change made after it returns:
	// an abort with nothing left to abort changes nothing and returns
	// once the proxy has the newest table.
	if res, err := n.ctrl.Abort(ctx, wire.ChangeRequest{Reason: "nothing to abort"}); err != nil || res.Applied {
		t.Fatalf("a second abort: %+v %v, want nothing done", res, err)
	}
	r.phase.Store(2)
	r.settled("blue")
	// The stream opened on the canary stays there, and ends cleanly.
	if _, err := onCanary.echo(); err != nil {
		t.Fatalf("after the rollback: %v", err)
	}
	if err := onCanary.end(); err != nil {
		t.Fatalf("after the rollback: %v", err)
	}
	waitChecked("after the rollback", 200)

	// The long streams end, on the slots they began on.
	if wait := time.Until(began.Add(length)); wait > 0 {
		select { // pacing: the streams last their length
		case <-time.After(wait):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	close(endStreams)
	endedStreams = true
	streams.Wait()
	for i, err := range longErrs {
		if err != nil {
			t.Errorf("long stream %d: %v", i, err)
		}
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if in, open := slotInFlight(n, "green"), rig.openEchoes("green"); in != 0 || open != 0 {
			return fmt.Errorf("green, drained, has %d requests in flight and %d streams open on its instances", in, open)
		}
		return nil
	})
	stop()
	vstest.WaitFor(t, 30*time.Second, func() error {
		if in := slotInFlight(n, "blue"); in != 0 {
			return fmt.Errorf("blue has %d requests in flight with the load stopped", in)
		}
		return nil
	})

	var injected int64
	for _, s := range rig.servers[canary] {
		injected += s.Failures.Load()
	}
	for _, s := range rig.servers["blue"] {
		if s.Failures.Load() != 0 {
			t.Errorf("%s, stable, injected failures", s.Addr)
		}
	}
	prodStatus := n.ctrl.Status().Listeners[0]
	t.Logf("%s: %d swaps in %s, then a rollout to %s rolled back after %s; streams of %s: %d long (%d and %d messages, on %s and %s), %d short, one through the rollback on %s",
		map[bool]string{false: "h2c", true: "tls"}[overTLS], proofSwaps, swapsDone.Round(time.Millisecond), canary, rolledBack.Round(time.Millisecond),
		length, len(long), long[0].sent, long[1].sent, long[0].inst, long[1].inst, proofSwaps, onCanary.inst)
	t.Logf("calls: %d answered (%d of them over net/http, %d short streams racing the swaps; %d checked against the slot in force, %d misrouted), %d injected errors seen (%d injected by the canary), %d failed (%d vipswap's own); vipswap counted %d failed, %d instance errors on prod",
		l.answered.Load(), plain.Load(), churned.Load(), l.checked.Load(), l.misrouted.Load(), l.injected.Load(), injected, l.failed.Load(), l.own.Load(),
		n.px.Failed(route.Prod), prodStatus.InstanceErrors)
	t.Logf("latency: slowest %s, %d over 100ms, mean %s", l.slowest, l.slow, l.total/time.Duration(l.answered.Load()+1))
	if l.failed.Load() != 0 || l.misrouted.Load() != 0 {
		t.Fatalf("%d calls failed (%d vipswap's own UNAVAILABLE), %d misrouted; first: %q", l.failed.Load(), l.own.Load(), l.misrouted.Load(), l.first)
	}
	if l.injected.Load() == 0 || l.injected.Load() != injected {
		t.Fatalf("the clients saw %d injected errors, the canary's instances injected %d: want the same, and some", l.injected.Load(), injected)
	}
	if prodStatus.InstanceErrors != uint64(injected) {
		t.Fatalf("vipswap counted %d instance errors on prod, the canary's instances injected %d", prodStatus.InstanceErrors, injected)
	}
	// Each swap's measurement (once its old slot drained, or measuring
	// gave up) counts no failed request either.
	entries, err := n.ctrl.History(ctx, 0, proofSwaps+5)
	if err != nil {
		t.Fatal(err)
	}
	measured := 0
	for _, e := range entries {
		if e.Measurement == nil {
			continue
		}
		measured++
		if e.Measurement.Failed != 0 {
			t.Errorf("history %d (%s %s → %s): %d failed prod requests measured", e.ID, e.Operation, e.From, e.To, e.Measurement.Failed)
		}
	}
	t.Logf("%d of the last %d history entries measured, none with a failed request", measured, len(entries))
	if f := n.px.Failed(route.Prod); f != 0 {
		t.Fatalf("vipswap counted %d failed prod requests, want 0", f)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the test ran out of time")
	}
}
