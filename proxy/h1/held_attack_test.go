package h1

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestTLSReclaimDuringTheWaitCloses: at MaxConns, a TLS connection whose
// answer has just gone out (within the wait for its next request, which
// makes it idle) is reclaimed for a new connection. The reclaim sets a
// past read deadline to wake it; the wait's timeout then moved the
// deadline on to IdleTimeout, so the reclaimed connection sat until then
// holding its slot, the new connection (and the accept loop) waited
// behind it, and Shutdown, which does not wake a reclaimed connection,
// waited too.
func TestTLSReclaimDuringTheWaitCloses(t *testing.T) {
	s := &Server{Handler: ok200, MaxConns: 1, IdleTimeout: 10 * time.Minute}
	addr := startTLS(t, s)
	a, abr := dialTLSTo(t, addr)
	io.WriteString(a, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := read(t, abr, "GET"); resp.StatusCode != 200 {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	// At once, within the wait that follows a's answer: b needs a's slot.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(time.Minute)) // IdleTimeout is ten
	b := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	began := time.Now()
	io.WriteString(b, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(b), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("a new connection at MaxConns got no answer after %s (the idle one's IdleTimeout is %s): %v",
			time.Since(began).Round(time.Millisecond), s.IdleTimeout, err)
	}
	resp.Body.Close()
	t.Logf("admitted and answered in %s; %d reclaimed", time.Since(began).Round(time.Millisecond), s.Reclaimed())
	if s.Reclaimed() == 0 {
		t.Fatal("the idle connection was not reclaimed")
	}
}
