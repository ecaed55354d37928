package proxy

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// A TLS alert on a new connection is the instance refusing the handshake
// only until the instance has read the request: one that read a POST whole
// and then sent an alert (internal_error) in place of an answer may have
// acted on it, and the POST is not sent again, read whole or not. A PUT
// is.
func TestAnAlertAfterTheRequestIsNoRefusedHandshake(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	var seen atomic.Int64
	var alert atomic.Bool
	serve := func(raw net.Conn) {
		var mu sync.Mutex
		var keylog bytes.Buffer
		c := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS13,
			SessionTicketsDisabled: true, KeyLogWriter: lockedWriter{&mu, &keylog}})
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.ReadAll(r.Body); err != nil {
				return
			}
			seen.Add(1)
			if alert.CompareAndSwap(true, false) {
				// Read whole, (acted on,) and then a fatal alert, the
				// first record this side sends after the handshake.
				mu.Lock()
				secret := serverSecret(t, keylog.String())
				mu.Unlock()
				raw.Write(alertRecord(t, c.ConnectionState().CipherSuite, secret))
				raw.Close()
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}
	blue := []*route.Instance{
		route.NewInstance("blue", vstest.Serve(t, serve)),
		route.NewInstance("blue", vstest.Serve(t, serve)),
	}
	_, prod := proxyWith(t, &Upstream{Protocol: HTTP1, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "a"}, Options{}, blue...)
	send := func(method string) int {
		code, _ := sendBody(t, method, prod, strings.Repeat("b", 1000))
		return code
	}
	alert.Store(true)
	if code := send(http.MethodPost); code != http.StatusBadGateway || seen.Load() != 1 {
		t.Fatalf("POST: %d after %d arrivals, want a 502 after 1 (never sent twice)", code, seen.Load())
	}
	seen.Store(0)
	alert.Store(true)
	if code := send(http.MethodPut); code != 200 || seen.Load() != 2 {
		t.Fatalf("PUT: %d after %d arrivals, want 200 after 2 (sent again)", code, seen.Load())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// serverSecret is SERVER_TRAFFIC_SECRET_0 from a key log.
func serverSecret(t *testing.T, log string) []byte {
	for line := range strings.Lines(log) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "SERVER_TRAFFIC_SECRET_0" {
			b, err := hex.DecodeString(f[2])
			if err != nil {
				t.Error(err)
			}
			return b
		}
	}
	t.Error("no SERVER_TRAFFIC_SECRET_0 in the key log")
	return nil
}

// alertRecord is a TLS 1.3 record carrying a fatal internal_error alert,
// sealed with the server's first application traffic key (sequence 0).
func alertRecord(t *testing.T, suite uint16, secret []byte) []byte {
	if suite != tls.TLS_AES_128_GCM_SHA256 {
		t.Errorf("cipher suite %s: the test seals AES-128-GCM only", tls.CipherSuiteName(suite))
		return nil
	}
	label := func(l string, n int) []byte {
		info := binary.BigEndian.AppendUint16(nil, uint16(n))
		info = append(info, byte(len("tls13 "+l)))
		info = append(info, "tls13 "+l...)
		info = append(info, 0)
		out, err := hkdf.Expand(sha256.New, secret, string(info), n)
		if err != nil {
			t.Error(err)
		}
		return out
	}
	key, iv := label("key", 16), label("iv", 12)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	inner := []byte{2, 80, 21} // fatal, internal_error; content type alert
	header := []byte{23, 3, 3, 0, byte(len(inner) + aead.Overhead())}
	return aead.Seal(bytes.Clone(header), iv, inner, header)
}
