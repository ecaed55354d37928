package shadow

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/vipswap/vipswap/route"
)

// job is one request being copied: what it carries, and prod's answer as it
// streamed to the client. It implements proxy.MirrorTap.
type job struct {
	m        *Mirror
	run      *run
	table    *route.Table
	prodSlot string
	method   string
	uri      string
	host     string
	remote   string               // the client's address, for X-Forwarded-For
	tls      *tls.ConnectionState // the client's TLS, for X-Forwarded-Proto
	header   http.Header
	body     []byte
	cost     int64 // bytes reserved against MaxMemory
	prod     answer
	latency  time.Duration // prod's instance latency
	noMemory bool          // prod's head did not fit in MaxMemory: dropped when done
	tapped   time.Time     // when prod's answer began (Tap)
	took     time.Duration // how long prod's answer took to reach the client whole
}

// answer is what is compared of one answer: status, headers, the body's
// length and hash up to CompareLimit, the body itself up to KeepLimit.
type answer struct {
	status int
	header http.Header
	n      int64 // body bytes seen
	over   bool  // longer than CompareLimit: the body is not compared
	hash   maphash.Hash
	kept   []byte // the body, while it is at most KeepLimit
	keep   int
	limit  int64
	// m, when set, holds kept's bytes against MaxMemory (held of them):
	// prod's answers wait in the queue, the target's do not.
	m    *Mirror
	held int64
}

var seed = maphash.MakeSeed()

func (a *answer) start(o Options) {
	a.hash.SetSeed(seed)
	a.keep, a.limit = o.KeepLimit, o.CompareLimit
}

// write takes the next piece of the body.
func (a *answer) write(p []byte) {
	if a.over || len(p) == 0 {
		return
	}
	a.n += int64(len(p))
	if a.n > a.limit {
		a.over, a.kept, a.keep = true, nil, -1
		a.release()
		return
	}
	a.hash.Write(p)
	if a.keep < 0 {
		return
	}
	if a.n <= int64(a.keep) && (a.m == nil || a.m.reserve(int64(len(p)))) {
		a.kept = append(a.kept, p...)
		if a.m != nil {
			a.held += int64(len(p))
		}
		return
	}
	// Too long to keep, or no memory left for it: hashed only.
	a.kept, a.keep = nil, -1
	a.release()
}

// release gives back what kept held.
func (a *answer) release() {
	if a.m != nil && a.held != 0 {
		a.m.mem.Add(-a.held)
		a.held = 0
	}
}

// whole reports whether the whole body is in kept.
func (a *answer) whole() bool { return a.keep >= 0 && !a.over }

// Response implements proxy.MirrorTap: it notes prod's head and sees the
// body on its way to the client.
func (j *job) Response(resp *http.Response) io.Reader {
	j.prod.status = resp.StatusCode
	// Prod's head waits with the copy: held against MaxMemory like the
	// request's, or the copy is dropped (Done).
	if hb := int64(headerBytes(resp.Header)); !j.m.reserve(hb) {
		j.noMemory = true
		return resp.Body
	} else {
		j.cost += hb
	}
	j.prod.header = resp.Header.Clone()
	if j.method == http.MethodHead {
		return resp.Body
	}
	return &tee{r: resp.Body, a: &j.prod}
}

// tee passes a body on and writes what it read to an answer.
type tee struct {
	r io.Reader
	a *answer
}

func (t *tee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.a.write(p[:n])
	}
	return n, err
}

// Done implements proxy.MirrorTap: the prod answer is out, the copy may
// go.
func (j *job) Done(ok bool, latency time.Duration) {
	switch {
	case j.noMemory:
		j.m.drop(j.run, dropMemory, j.cost)
		return
	case !ok:
		j.prod.release()
		j.m.drop(j.run, dropProdFailed, j.cost)
		return
	}
	j.latency, j.took = latency, time.Since(j.tapped)
	j.m.enqueue(j)
}

// send sends a copy to an instance of the target slot, reads the answer
// within the bounds, and compares it.
func (m *Mirror) send(j *job) {
	defer m.mem.Add(-j.cost)
	defer j.prod.release()
	ru := j.run
	if ru.stopped.Load() != nil || m.cur.Load() != ru {
		ru.f.dropped[dropStopped].Add(1)
		m.totals.dropped.Add(1)
		return
	}
	slot := j.table.Named(ru.spec.To)
	var picked *route.Instance
	if slot != nil {
		picked = slot.Pick(nil)
	}
	if picked == nil {
		ru.f.dropped[dropNoInstance].Add(1)
		m.totals.dropped.Add(1)
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.o.Timeout)
	defer cancel()
	req := &http.Request{
		Method: j.method, Host: j.host, Header: j.header, RemoteAddr: j.remote, TLS: j.tls,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
	sent, err := m.o.Sender.Send(ctx, req, j.uri, j.body, picked)
	if errors.Is(err, syscall.ECONNREFUSED) {
		// The instance refused the connection: nothing was sent, so the
		// copy goes to another instance of the slot, once, as prod's
		// requests do (an instance stopping during a deploy is no error
		// of the new version). Otherwise a copy goes to no other
		// instance; Send itself sends it again on a new connection only
		// when the pooled one it went out on was dead, by prod's rule.
		if other := slot.Pick([]*route.Instance{picked}); other != nil {
			sent, err = m.o.Sender.Send(ctx, req, j.uri, j.body, other)
		}
	}
	if err != nil {
		m.result(j, nil, 0, err)
		return
	}
	whole := false
	defer func() { sent.Done(whole) }()
	resp, lat := sent.Response, sent.Latency
	var tgt answer
	tgt.start(m.o)
	tgt.status, tgt.header = resp.StatusCode, resp.Header
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	for !tgt.over {
		n, rerr := resp.Body.Read(buf)
		tgt.write(buf[:n])
		if rerr == io.EOF {
			whole = true
			break
		}
		if rerr != nil {
			if ctx.Err() == context.DeadlineExceeded && j.took > m.o.Timeout {
				// Prod's answer streamed longer than a copy may take:
				// the target, cut alike, did not fail; the pair is
				// compared by status and type.
				j.prod.over, tgt.over = true, true
				break
			}
			if ctx.Err() == context.DeadlineExceeded {
				rerr = fmt.Errorf("not whole within %s", m.o.Timeout) // the head came in time
			}
			m.result(j, nil, lat, fmt.Errorf("answer body: %w", rerr))
			return
		}
	}
	m.result(j, &tgt, lat, nil)
}

// bufs are the buffers copies read their answers through.
var bufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// result compares a copy's answer (nil: the target failed with err) and
// counts it.
func (m *Mirror) result(j *job, tgt *answer, lat time.Duration, err error) {
	ru := j.run
	f := &ru.f
	now := m.now()
	if err != nil {
		f.errors.Add(1)
		f.targetErrors.Add(1)
		m.totals.errors.Add(1)
		f.sample(diffOf(now, j, 0, "error: "+failure(err, m.o.Timeout), "", ""))
		m.window(ru, now, true)
		return
	}
	f.prodLat.add(j.latency)
	f.targetLat.add(lat)
	m.totals.latency(j.prodSlot).add(j.latency)
	m.totals.latency(ru.spec.To).add(lat)
	if j.prod.over && tgt.over || j.prod.status == http.StatusNotModified {
		f.bodyUncompared.Add(1)
	}
	targetErr := tgt.status >= 500 && j.prod.status < 500 // a 5xx prod answered too is no worse
	if targetErr {
		f.targetErrors.Add(1)
	}
	m.window(ru, now, targetErr)
	d := compare(&j.prod, tgt, ru)
	if d == nil {
		f.same.Add(1)
		m.totals.same.Add(1)
		return
	}
	f.differ.Add(1)
	m.totals.differ.Add(1)
	f.sample(diffOf(now, j, tgt.status, d.where, d.prod, d.target))
}

// failure says why the target gave no answer, in a few words.
func failure(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %s", timeout)
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
