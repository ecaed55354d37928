package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"io"
	"net/http"
	"testing"
)

// A handler's writes before its answer happen before what the client
// does after reading the answer, for the race detector as for the
// machine: the socket orders them (net.Conn's Read and Write tell the
// race detector so, and so must a connection's raw socket IO).
func TestRaceSeesTheSocketOrderAnswer(t *testing.T) {
	var seen string
	_, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.URL.Path
		io.WriteString(w, "ok")
	})})
	c, br := dial(t, addr)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := read(t, br, "GET"); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if seen != "/a" {
		t.Fatalf("seen %q", seen)
	}
}

// And what the client did before sending a request happens before the
// handler.
func TestRaceSeesTheSocketOrderRequest(t *testing.T) {
	var set string
	got := make(chan string, 1)
	_, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- set
	})})
	c, br := dial(t, addr)
	// A first request, so that the connection is served by its goroutine.
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, br, "GET")
	<-got
	set = "two"
	io.WriteString(c, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, br, "GET")
	if v := <-got; v != "two" {
		t.Fatalf("got %q", v)
	}
}

// Connections that park and come back, pipeline, and take answers larger
// than the writer's buffer (chunked, through writev) each get their own
// answers, whole and in order: the raw socket IO a connection takes while
// it serves is never another's.
func TestPooledSocketIOsKeepTheirConnections(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		fmt.Fprintf(w, "%s body=%d;", r.URL.Path, len(body))
		chunk := []byte(strings.Repeat(r.URL.Path[1:2], 1000))
		for range n {
			w.Write(chunk) // chunked, larger than the buffer at once
		}
	})
	s, addr := start(t, &Server{Handler: h})
	const conns, rounds = 8, 6
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	cs := make([]client, conns)
	for i := range cs {
		cs[i].c, cs[i].br = dial(t, addr)
		cs[i].c.SetDeadline(time.Now().Add(time.Minute))
	}
	for round := range rounds {
		errs := make(chan error, conns)
		for i, cl := range cs {
			go func() {
				var sent []string
				var want []string
				k := 1 + (i+round)%3 // pipelined
				var out strings.Builder
				for j := range k {
					path := fmt.Sprintf("/%c%d-%d-%d", 'a'+i, i, round, j)
					n := (i*7 + round*3 + j) % 5 * 40 // 0 to 160 KB
					body := strings.Repeat("b", (i+j)*700)
					fmt.Fprintf(&out, "POST %s?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, n, len(body), body)
					sent = append(sent, path)
					want = append(want, fmt.Sprintf("%s body=%d;%s", path, len(body), strings.Repeat(path[1:2], 1000*n)))
				}
				if _, err := io.WriteString(cl.c, out.String()); err != nil {
					errs <- err
					return
				}
				for j := range sent {
					resp, err := http.ReadResponse(cl.br, nil)
					if err != nil {
						errs <- fmt.Errorf("conn %d round %d answer %d: %v", i, round, j, err)
						return
					}
					b, err := io.ReadAll(resp.Body)
					if err != nil || string(b) != want[j] {
						errs <- fmt.Errorf("conn %d round %d answer %d: %d bytes (%v), want the %d of %s", i, round, j, len(b), err, len(want[j]), sent[j])
						return
					}
				}
				errs <- nil
			}()
		}
		for range conns {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if s.parker != nil && round%2 == 1 {
			vstest.WaitFor(t, 10*time.Second, func() error { return parked(s, conns) })
		}
	}
}

// A client that sends requests one by one and never reads its answers
// has its connection closed once a write to it has waited WriteTimeout,
// a kept answer's too (sent from within the wait for the next request,
// which the client sends once the answer before is out).
func TestAClientThatNeverReadsIsClosedAtTheWriteTimeout(t *testing.T) {
	s, addr := start(t, &Server{WriteTimeout: 300 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("a", 3000)) // kept in the buffer, sent with the wait
	})})
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return nil
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	// waiting reports whether the connection waits for its next request
	// (its answer out), and whether it is gone.
	waiting := func() (bool, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for sc := range s.conns {
			st := sc.state.Load()
			return st == stateIdle || st == stateParked, false
		}
		return false, true
	}
	sent := 0
	for ; sent < 5000; sent++ {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			break
		}
		var gone bool
		vstest.WaitFor(t, 30*time.Second, func() error {
			var ok bool
			if ok, gone = waiting(); ok || gone {
				return nil
			}
			return errors.New("the answer is still going out")
		})
		if gone {
			break
		}
	}
	t.Logf("%d answers went out before the connection closed", sent)
	if sent == 5000 {
		t.Fatal("5000 answers went out to a client that reads none")
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if n := s.Conns(); n != 0 {
			return fmt.Errorf("the server holds %d connections", n)
		}
		return nil
	})
}
