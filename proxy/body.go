package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/proxy/h1"
)

// waitingOnClient reports whether an exchange with an instance that broke
// spent most of its time (at least half of total, and 100 ms) waiting on
// the client, for its body or to take the answer: then the instance's own
// read or write timeout fired because the client was slow, and the failure
// is the client's, not the instance's.
func waitingOnClient(waited, total time.Duration) bool {
	return waited >= 100*time.Millisecond && 2*waited >= total
}

// bodyGuard wraps a request body to know whether any of it was read, which
// decides whether it may be sent again, how long reading it waited on the
// client, and what went wrong reading it, which is the client's fault.
type bodyGuard struct {
	rc     io.ReadCloser
	read   bool
	waited time.Duration // time spent in reads of the client's body
	err    error         // the first error but io.EOF
}

func (b *bodyGuard) Read(p []byte) (int, error) {
	b.read = true
	t := clock.Now()
	n, err := b.rc.Read(p)
	b.waited += time.Since(t)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *bodyGuard) untouched() bool { return b == nil || !b.read }

// buffered is a request body read whole before any instance was picked.
type buffered struct {
	b   []byte
	off int
}

func (r *buffered) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

func (r *buffered) Close() error { return nil }

// rewind makes a body read whole before forwarding (buffered) whole and
// untouched again, for an attempt that goes again; a streamed body is
// left as it is (it cannot go again, and retryable says so).
func (rq *request) rewind() {
	if rq.buffered.b != nil {
		rq.buffered.off = 0
		rq.body.read = false
	}
}

// bodyBuffers recycles the buffers request bodies are read into.
var bodyBuffers sync.Pool

// buffer reads rq's body whole, when its length is known and at most
// Options.RequestBuffer, before an instance is picked: a client that
// sends it slowly then holds no instance connection and cannot make an
// instance give up on it, and the body must arrive whole within
// ClientReadTimeout however steadily it trickles. It returns the buffer
// to give back (nil when nothing was buffered); a body the client failed
// to send is its own error (408 or 400).
func (rq *request) buffer(w http.ResponseWriter, r *http.Request) (*[]byte, error) {
	limit := rq.o.RequestBuffer
	if rq.body == nil || limit < 0 || r.ContentLength <= 0 || r.ContentLength > int64(limit) {
		return nil, nil
	}
	if d, ok := w.(interface{ SetBodyDeadline(time.Time) }); ok {
		d.SetBodyDeadline(time.Now().Add(rq.o.ClientReadTimeout))
	}
	bp, _ := bodyBuffers.Get().(*[]byte)
	if bp == nil || cap(*bp) < int(r.ContentLength) {
		b := make([]byte, max(limit, int(r.ContentLength)))
		bp = &b
	}
	b := (*bp)[:r.ContentLength]
	if _, err := io.ReadFull(rq.body, b); err != nil {
		bodyBuffers.Put(bp)
		if errors.Is(err, io.ErrUnexpectedEOF) && rq.body.err == nil {
			err = &h1.BodyError{Status: http.StatusBadRequest, Err: errors.New("the client sent less than it announced")}
		}
		return nil, &attemptError{kind: failClient, err: err}
	}
	rq.buffered = buffered{b: b}
	rq.body = &bodyGuard{rc: &rq.buffered}
	return bp, nil
}

// errSlowBody says an instance gave up on a request while its client was
// slow sending the body: the client's doing, answered 408.
var errSlowBody = &h1.BodyError{Status: http.StatusRequestTimeout,
	Err: errors.New("the client sent it too slowly: the instance stopped waiting for it")}

// errSlowReader says an answer broke off while its client was slow taking
// it: the client's doing, not the instance's.
var errSlowReader = errors.New("the client took the answer too slowly: the instance stopped waiting for it")
