package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/wire"
)

// TestHTTP2Listeners: a TLS listener offers h2 by ALPN (http2 defaults to
// on) and an h2c one serves HTTP/2 with prior knowledge, both to the same
// slots as HTTP/1.1; swaps under HTTP/2 load on both fail no request.
// With http2: false, ALPN offers HTTP/1.1 alone.
func TestHTTP2Listeners(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "127.0.0.1")
	path := tlsConfig(t, dir, [][2]string{{"127.0.0.1.crt", "127.0.0.1.key"}},
		staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(raw), "  stage: 127.0.0.1:0\n", "  stage: {addr: 127.0.0.1:0, h2c: true}\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	n, _ := startNode(t, path)

	tlsTr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool()}, Protocols: new(http.Protocols)}
	tlsTr.Protocols.SetHTTP2(true)
	h2cTr := &http.Transport{Protocols: new(http.Protocols)}
	h2cTr.Protocols.SetUnencryptedHTTP2(true) // prior knowledge
	defer tlsTr.CloseIdleConnections()
	defer h2cTr.CloseIdleConnections()
	prod := func() (string, error) { return h2Get(tlsTr, "https://"+n.prodLn.Addr().String()+"/") }
	stage := func() (string, error) { return h2Get(h2cTr, "http://"+n.stageLn.Addr().String()+"/") }
	vstest.WaitFor(t, 30*time.Second, func() error {
		got, err := prod()
		if err == nil && got != "blue https" {
			err = fmt.Errorf("prod answered %q over HTTP/2, want blue https", got)
		}
		return err
	})
	if got, err := stage(); err != nil || got != "green http" {
		t.Fatalf("stage over h2c: %q %v, want green http", got, err)
	}
	// HTTP/1.1 still works on both.
	if got, err := get(listenerURL(n.stageLn)); err != nil || got != "green http" {
		t.Fatalf("stage over HTTP/1.1: %q %v", got, err)
	}

	var failed, served atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range []func() (string, error){prod, prod, stage, stage} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := f(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					served.Add(1)
				}
			}
		})
	}
	for i := range 4 {
		before := served.Load()
		vstest.WaitFor(t, time.Minute, func() error {
			if served.Load() < before+50 {
				return fmt.Errorf("only %d HTTP/2 requests served", served.Load())
			}
			return nil
		})
		if _, err := n.ctrl.Swap(context.Background(), wire.ChangeRequest{Reason: fmt.Sprintf("swap %d over HTTP/2", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("4 swaps under HTTP/2 load: %d served, %d failed", served.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d HTTP/2 requests failed across the swaps, first: %v", failed.Load(), firstErr.Load())
	}

	// http2: false: ALPN offers HTTP/1.1 alone.
	if c := listenerTLS(nil, false); strings.Join(c.NextProtos, ",") != "http/1.1" {
		t.Fatalf("http2 off offers %q", c.NextProtos)
	}
	conn, err := tls.Dial("tcp", n.prodLn.Addr().String(), &tls.Config{RootCAs: cert.Pool(), NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("prod (http2 by default) negotiated %q", p)
	}
}

// h2Get GETs url over tr and returns the body, or an error for anything
// but a 200 over HTTP/2.
func h2Get(tr *http.Transport, url string) (string, error) {
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && (resp.StatusCode != 200 || resp.ProtoMajor != 2) {
		err = fmt.Errorf("%s %s: %s", resp.Proto, resp.Status, body)
	}
	return string(body), err
}
