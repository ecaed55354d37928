package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// rawH2 is an h2c instance that speaks HTTP/2 frame by frame: on each
// request's HEADERS it calls onStream, which writes what it likes.
type rawH2 struct {
	inst    *route.Instance
	streams atomic.Int64
}

func newRawH2(t *testing.T, slot string, onStream func(fr *http2.Framer, id uint32)) *rawH2 {
	t.Helper()
	s := &rawH2{}
	s.inst = route.NewInstance(slot, vstest.Serve(t, func(c net.Conn) { s.serve(c, onStream) }))
	return s
}

func (s *rawH2) serve(c net.Conn, onStream func(fr *http2.Framer, id uint32)) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.HeadersFrame:
			s.streams.Add(1)
			onStream(fr, f.StreamID)
		}
	}
}

// headerBlock encodes fields as HPACK.
func headerBlock(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

// TestHTTP2RetriesOnlyWhatNeverReachedAnInstance: a request goes to
// another instance when the first was dead (refused the connection), refused
// the stream (REFUSED_STREAM) or was going away (GOAWAY below the stream):
// none failed. A stream the instance reset after taking it fails, and goes
// nowhere else, whatever its method.
func TestHTTP2RetriesOnlyWhatNeverReachedAnInstance(t *testing.T) {
	good := newUpstreamInstance(t, "blue", "good", H2C, nil, nil, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "good "+string(b))
	})
	refusing := newRawH2(t, "blue", func(fr *http2.Framer, id uint32) { fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
	goingAway := newRawH2(t, "blue", func(fr *http2.Framer, id uint32) { fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
	resetting := newRawH2(t, "blue", func(fr *http2.Framer, id uint32) { fr.WriteRSTStream(id, http2.ErrCodeInternal) })
	dead := route.NewInstance("blue", deadAddr(t))

	for _, c := range []struct {
		name string
		bad  *route.Instance
		rh   *rawH2
	}{{"dead", dead, nil}, {"refused stream", refusing.inst, refusing}, {"goaway", goingAway.inst, goingAway}} {
		t.Run(c.name, func(t *testing.T) {
			p, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{}, c.bad, good.inst)
			// At least 10 requests, and until the bad instance has been
			// tried (the pick may favour the good one a while).
			for i := 0; i < 10 || c.rh != nil && c.rh.streams.Load() == 0 && i < 500; i++ {
				method := []string{http.MethodGet, http.MethodPost}[i%2]
				req, _ := http.NewRequest(method, prod+"/x", strings.NewReader("body"))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "good body" {
					t.Fatalf("%s: %d %q, want 200 from the good instance with the body", method, resp.StatusCode, b)
				}
			}
			if f := p.Failed(route.Prod); f != 0 {
				t.Errorf("%d failed, want 0", f)
			}
			if c.rh != nil && c.rh.streams.Load() == 0 {
				t.Error("the bad instance was never tried")
			}
		})
	}

	t.Run("reset after taking it", func(t *testing.T) {
		p, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{}, resetting.inst)
		goodBefore := good.hits.Load()
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, _ := http.NewRequest(method, prod+"/x", strings.NewReader("body"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "reset") {
				t.Errorf("%s: %d %q, want 502 saying the slot reset it", method, resp.StatusCode, b)
			}
		}
		if n := resetting.streams.Load(); n != 2 {
			t.Errorf("the resetting instance got %d streams, want 2 (no retry)", n)
		}
		if good.hits.Load() != goodBefore {
			t.Error("a reset request went to another instance")
		}
		if f := p.Failed(route.Prod); f != 2 {
			t.Errorf("%d failed, want 2", f)
		}
	})
}

// TestHostileHTTP2Instances: an h2c instance that sends headers without
// end (CONTINUATION after CONTINUATION), never answers, or sends more data
// than its window allows fails its own request, and the green slot, on
// stage, answers all along.
func TestHostileHTTP2Instances(t *testing.T) {
	big := strings.Repeat("a", 16<<10)
	cases := []struct {
		name     string
		onStream func(fr *http2.Framer, id uint32)
		want     int
	}{
		{"endless CONTINUATION", func(fr *http2.Framer, id uint32) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: headerBlock(":status", "200")})
			for i := 0; i < 1000; i++ {
				if fr.WriteContinuation(id, false, headerBlock("x-junk", big)) != nil {
					return
				}
			}
		}, http.StatusBadGateway},
		{"never answers", func(*http2.Framer, uint32) {}, http.StatusGatewayTimeout},
		{"takes no body (window shut)", func(*http2.Framer, uint32) {}, http.StatusGatewayTimeout},
		{"data beyond the window", func(fr *http2.Framer, id uint32) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: headerBlock(":status", "200"), EndHeaders: true})
			chunk := make([]byte, 16<<10)
			for i := 0; i < 1000; i++ { // 16 MiB, with a window of 64 KiB
				if fr.WriteData(id, false, chunk) != nil {
					return
				}
			}
		}, http.StatusBadGateway},
	}
	green := newInstance(t, "green", "g1", nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := newRawH2(t, "blue", c.onStream)
			p := New(Options{ResponseHeaderTimeout: 500 * time.Millisecond, InstanceReadTimeout: 500 * time.Millisecond,
				InstanceWriteTimeout: 500 * time.Millisecond, RequestBuffer: -1,
				Upstreams: map[string]*Upstream{"blue": {Protocol: H2C}}})
			p.Apply(table(1, []*route.Instance{bad.inst}, []*route.Instance{green.inst}))
			prod, stage := serve(t, p)
			done := make(chan struct{})
			go func() {
				defer close(done)
				var body io.Reader
				if strings.HasPrefix(c.name, "takes no body") {
					body = io.LimitReader(zeros{}, 1<<20) // beyond any window the instance never opens
				}
				req, _ := http.NewRequest(http.MethodPost, prod+"/", body)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return // cut off: also a failure of this request alone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != c.want && resp.StatusCode != 200 {
					t.Errorf("the hostile instance's request: %d, want %d", resp.StatusCode, c.want)
				}
			}()
			for range 5 {
				if code, body := get(t, stage); code != 200 || body != "g1" {
					t.Errorf("stage: %d %q while blue misbehaves", code, body)
				}
			}
			<-done
			if f := p.Failed(route.Prod); f != 1 {
				t.Errorf("prod: %d failed, want 1", f)
			}
			if f := p.Failed(route.Stage); f != 0 {
				t.Errorf("stage: %d failed, want 0", f)
			}
		})
	}
}

// TestHTTP2InstanceClosingAtOnce: an instance that accepts HTTP/2
// connections and closes them before any stream never got a request:
// each goes to the good instance, and none retries it without end.
func TestHTTP2InstanceClosingAtOnce(t *testing.T) {
	var accepted atomic.Int64
	closing := vstest.Serve(t, func(net.Conn) { accepted.Add(1) }) // and closes it
	good := newUpstreamInstance(t, "blue", "good", H2C, nil, nil, nil)
	p, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{}, route.NewInstance("blue", closing), good.inst)
	for range 10 {
		req, _ := http.NewRequest(http.MethodPost, prod+"/", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "good" {
			t.Fatalf("%d %q, want the good instance's answer", resp.StatusCode, b)
		}
	}
	if f := p.Failed(route.Prod); f != 0 {
		t.Errorf("%d failed", f)
	}
	if n := accepted.Load(); n > 20 {
		t.Errorf("the closing instance was dialled %d times for 10 requests", n)
	}
}

// TestHTTP2InstanceStoppingUnderLoad: concurrent clients, GET and POST,
// while one of two h2c instances shuts down gracefully (GOAWAY) and then
// refuses connections: no request fails, and the connections are shared
// (one per instance while it lives).
func TestHTTP2InstanceStoppingUnderLoad(t *testing.T) {
	echoBody := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}
	a := newUpstreamInstance(t, "blue", "a", H2C, nil, nil, echoBody)
	b := newUpstreamInstance(t, "blue", "b", H2C, nil, nil, echoBody)
	p, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{}, a.inst, b.inst)
	const clients, each = 8, 30
	var bad atomic.Int64
	var done atomic.Int64
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				method := []string{http.MethodGet, http.MethodPost}[(c+i)%2]
				body := strings.Repeat("x", i)
				req, _ := http.NewRequest(method, prod+"/", strings.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != body {
					bad.Add(1)
				}
				done.Add(1)
			}
		})
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if done.Load() < clients*each/4 {
			return errors.New("load still starting")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.Config.Shutdown(ctx) // GOAWAY, then it refuses connections
	a.Listener.Close()
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
	if f := p.Failed(route.Prod); f != 0 {
		t.Errorf("vipswap counted %d failed", f)
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("the instance that stayed got %d connections, want 1 (streams share it)", n)
	}
}

// TestUpstreamChangesUnderLoad: under concurrent load, a slot's protocol
// changes (h2c, http1, h2c: what a reload does) and the tables swap
// between two slots: no request fails, and nothing stays in flight.
func TestUpstreamChangesUnderLoad(t *testing.T) {
	var byProto [3]atomic.Int64 // requests the instances got by HTTP major version
	echoProto := func(w http.ResponseWriter, r *http.Request) {
		byProto[r.ProtoMajor].Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}
	blue := newUpstreamInstance(t, "blue", "b", bothHTTP1AndH2C, nil, nil, echoProto)
	green := newUpstreamInstance(t, "green", "g", bothHTTP1AndH2C, nil, nil, echoProto)
	ups := func(proto Protocol) map[string]*Upstream {
		return map[string]*Upstream{"blue": {Protocol: proto}, "green": {Protocol: proto}}
	}
	p := New(Options{Upstreams: ups(H2C)})
	p.Apply(table(1, []*route.Instance{blue.inst}, []*route.Instance{green.inst}))
	prod, _ := serve(t, p)
	// The clients send until the last change has had requests after it:
	// each change waits for requests under the one before, however fast
	// the machine serves them.
	const clients, between = 6, 40
	var bad, done atomic.Int64
	var over atomic.Bool
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := 0; !over.Load(); i++ {
				body := strings.Repeat("z", c+i%50)
				req, _ := http.NewRequest(http.MethodPost, prod+"/", strings.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != body {
					bad.Add(1)
				}
				done.Add(1)
			}
		})
	}
	step := func(change func()) {
		n := done.Load() + between
		vstest.WaitFor(t, 30*time.Second, func() error {
			if done.Load() < n {
				return errors.New("waiting for load")
			}
			return nil
		})
		change()
	}
	step(func() { p.Reconfigure(Options{Upstreams: ups(HTTP1)}) })
	step(func() { p.Apply(table(2, []*route.Instance{green.inst}, []*route.Instance{blue.inst})) })
	step(func() { p.Reconfigure(Options{Upstreams: ups(H2C)}) })
	step(func() { p.Apply(table(3, []*route.Instance{blue.inst}, []*route.Instance{green.inst})) })
	step(func() { over.Store(true) })
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
	if f := p.Failed(route.Prod); f != 0 {
		t.Errorf("vipswap counted %d failed", f)
	}
	if byProto[1].Load() == 0 || byProto[2].Load() == 0 {
		t.Errorf("HTTP/1.1 requests %d, HTTP/2 %d: want both", byProto[1].Load(), byProto[2].Load())
	}
	// A handler ends a moment after its client has the whole answer.
	vstest.WaitFor(t, 10*time.Second, func() error {
		for _, in := range []*upstreamInstance{blue, green} {
			if n := in.inst.InFlight(route.Prod); n != 0 {
				return fmt.Errorf("%s: %d in flight after the load", in.name, n)
			}
		}
		return nil
	})
}

// countedZeros reads as zero bytes, counting them.
type countedZeros struct{ n *atomic.Int64 }

func (z countedZeros) Read(p []byte) (int, error) {
	clear(p)
	z.n.Add(int64(len(p)))
	return len(p), nil
}

// stuckH2 starts an h2c instance that opens its windows wide, takes a
// request's HEADERS and then reads nothing more: a request's body fills
// the socket to it. It returns its address and the count of HEADERS.
func stuckH2(t *testing.T) (string, *atomic.Int64) {
	stop := make(chan struct{})
	headers := new(atomic.Int64)
	addr := vstest.Serve(t, func(c net.Conn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
		fr.WriteWindowUpdate(0, 1<<30)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.HeadersFrame); ok {
				headers.Add(1)
				<-stop // and reads nothing more
				return
			}
		}
	})
	t.Cleanup(func() { close(stop) }) // before the connections close
	return addr, headers
}

// TestShutdownClosesAStuckHTTP2InstanceAtOnce: an h2c instance opens its
// windows wide, takes a request's HEADERS and then reads nothing more, so
// that the request's body fills the socket and the proxy's send to it
// waits on InstanceWriteTimeout (an hour here). A Shutdown whose context
// ends closes that connection at once, as it did a connection x/net wrote
// to itself: Shutdown returns, and so does the client's request.
func TestShutdownClosesAStuckHTTP2InstanceAtOnce(t *testing.T) {
	addr, headers := stuckH2(t)
	p := New(Options{InstanceWriteTimeout: time.Hour, ResponseHeaderTimeout: time.Hour, InstanceReadTimeout: time.Hour,
		RequestBuffer: -1, Upstreams: map[string]*Upstream{"blue": {Protocol: H2C}}})
	p.Apply(table(1, []*route.Instance{route.NewInstance("blue", addr)}, nil))
	prod, _ := serve(t, p)

	var read atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest(http.MethodPost, prod+"/", io.LimitReader(countedZeros{&read}, 1<<30))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	// The send to the instance is stuck, or soon will be (the instance
	// reads nothing): whenever it is, Close would wait on it.
	vstest.WaitFor(t, 30*time.Second, func() error {
		if n := read.Load(); headers.Load() == 0 || n < 1<<20 {
			return fmt.Errorf("%d bytes of the body read, the instance has %d HEADERS", n, headers.Load())
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(ctx) }()
	vstest.WaitFor(t, 20*time.Second, func() error {
		select {
		case err := <-shut:
			if err == nil {
				t.Error("Shutdown with a request in flight past its context: no error")
			}
			return nil
		default:
			return errors.New("Shutdown has not returned (its context ended)")
		}
	})
	vstest.WaitFor(t, 20*time.Second, func() error {
		select {
		case <-done:
			return nil
		default:
			return fmt.Errorf("the client's request still runs after Shutdown (%d bytes of its body read)", read.Load())
		}
	})
}

// TestHTTP2InstanceThatStopsReading: a request whose body the instance
// stops reading (at the socket: its windows are open) fails once no byte
// went out for InstanceWriteTimeout, alone: the other listener's requests,
// to another instance, all succeed meanwhile and after.
func TestHTTP2InstanceThatStopsReading(t *testing.T) {
	addr, headers := stuckH2(t)
	green := newInstance(t, "green", "g1", nil)
	p := New(Options{InstanceWriteTimeout: 500 * time.Millisecond, ResponseHeaderTimeout: time.Hour, InstanceReadTimeout: time.Hour,
		RequestBuffer: -1, Upstreams: map[string]*Upstream{"blue": {Protocol: H2C}}})
	p.Apply(table(1, []*route.Instance{route.NewInstance("blue", addr)}, []*route.Instance{green.inst}))
	prod, stage := serve(t, p)
	var read atomic.Int64
	done := make(chan int, 1)
	began := time.Now()
	go func() {
		req, _ := http.NewRequest(http.MethodPost, prod+"/", io.LimitReader(countedZeros{&read}, 1<<30))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0 // cut off: a failure of this request alone
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	var code int
	vstest.WaitFor(t, 30*time.Second, func() error {
		if c, b := get(t, stage); c != 200 || b != "g1" {
			t.Errorf("stage: %d %q while blue stopped reading", c, b)
		}
		select {
		case code = <-done:
			return nil
		default:
			return fmt.Errorf("the request to the instance that stopped reading still runs (%d bytes of its body read, %d HEADERS)", read.Load(), headers.Load())
		}
	})
	t.Logf("the request ended with %d after %v, %d bytes of its body read", code, time.Since(began).Round(time.Millisecond), read.Load())
	if code == http.StatusOK {
		t.Errorf("the request to an instance that read none of its body: 200")
	}
	if c, b := get(t, stage); c != 200 || b != "g1" {
		t.Errorf("stage: %d %q after", c, b)
	}
	if f := p.Failed(route.Stage); f != 0 {
		t.Errorf("stage: %d failed", f)
	}
}
