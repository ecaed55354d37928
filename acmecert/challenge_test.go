package acmecert

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// countingStorage counts the loads of the storage it wraps.
type countingStorage struct {
	certmagic.Storage
	loads atomic.Int64
}

func (s *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	s.loads.Add(1)
	return s.Storage.Load(ctx, key)
}

// TestHTTPChallengeLookupsAreBounded: anyone may ask for
// /.well-known/acme-challenge/ with the Host of an acme name; with no
// validation pending on this node, each such request looked in the
// storage (etcd, in a cluster) for one another node started: a client
// made a read of the cluster's store per request, as fast as it could
// send them. A lookup that found none is now believed for a moment, and
// one runs at a time per name: a thousand requests, a few at once, make a
// handful of reads, and none is answered.
func TestHTTPChallengeLookupsAreBounded(t *testing.T) {
	st := &countingStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}}
	m, err := New(Options{Listener: "listeners.prod", Email: "ops@example.com", CA: "https://127.0.0.1:1/directory",
		Names: []string{"www.example.com"}, Storage: st, HTTPAddr: "127.0.0.1:80", TLSAddr: "127.0.0.1:443"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var answered atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range 4 {
		wg.Go(func() {
			for range 250 {
				r := httptest.NewRequest("GET", "http://www.example.com/.well-known/acme-challenge/abcdefghijklmnop", nil)
				if m.HandleHTTPChallenge(httptest.NewRecorder(), r) {
					answered.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	if n := answered.Load(); n != 0 {
		t.Errorf("%d requests answered with no validation pending", n)
	}
	// One read per challengeMissTTL that passed (and one more per
	// request under way when it ended), not one per request.
	if n, most := st.loads.Load(), int64(4*(elapsed/challengeMissTTL+2)); n > most {
		t.Errorf("1000 requests in %s made %d reads of the storage, want at most %d", elapsed, n, most)
	}
}

// TestTLSALPNChallengeLookupsAreBounded: the same for TLS-ALPN-01: anyone
// may open a handshake offering only acme-tls/1 for an acme name, and each
// read the storage.
func TestTLSALPNChallengeLookupsAreBounded(t *testing.T) {
	st := &countingStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}}
	m, err := New(Options{Listener: "listeners.prod", Email: "ops@example.com", CA: "https://127.0.0.1:1/directory",
		Names: []string{"www.example.com"}, Storage: st, TLSAddr: "127.0.0.1:443"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	var answered atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range 4 {
		wg.Go(func() {
			for range 250 {
				hello := &tls.ClientHelloInfo{ServerName: "www.example.com", SupportedProtos: []string{acmez.ACMETLS1Protocol}, Conn: c1}
				conf := m.ChallengeConfig(hello)
				if conf == nil {
					t.Error("a TLS-ALPN-01 hello for an acme name got no challenge configuration")
					return
				}
				if c, err := conf.GetCertificate(hello); err == nil && c != nil {
					answered.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	if n := answered.Load(); n != 0 {
		t.Errorf("%d handshakes answered with no validation pending", n)
	}
	if n, most := st.loads.Load(), int64(4*(elapsed/challengeMissTTL+2)); n > most {
		t.Errorf("1000 handshakes in %s made %d reads of the storage, want at most %d", elapsed, n, most)
	}
}

// TestNoCertificateYetSaysWhatServes: until a name's certificate is
// obtained, the log says what clients get: on a listener with certificate
// files those serve the name (it said the handshakes failed, which sent
// its reader looking for an outage there was not); with ACME alone they
// fail.
func TestNoCertificateYetSaysWhatServes(t *testing.T) {
	for _, fallback := range []bool{true, false} {
		buf := &lockedBuf{}
		m, err := New(Options{Listener: "listeners.prod", Email: "ops@example.com", CA: "https://127.0.0.1:1/directory",
			Names: []string{"www.example.com"}, Storage: &certmagic.FileStorage{Path: t.TempDir()}, TLSAddr: "127.0.0.1:443",
			Logger: slog.New(slog.NewTextHandler(buf, nil)), Fallback: fallback})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if _, err := m.Certificate("www.example.com"); err == nil {
			t.Fatal("a certificate before any was obtained")
		}
		want := map[bool]string{true: "the certificate files serve the name", false: "handshakes for the name fail"}[fallback]
		if !strings.Contains(buf.String(), "acme: no certificate yet: "+want) {
			t.Errorf("with files %v, the log says %q, want %q", fallback, buf.String(), want)
		}
	}
}

// lockedBuf is a log's output, written by certmagic's goroutines and read
// by the test.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
