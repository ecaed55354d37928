package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/grpctest"
	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/slotapp"
	"github.com/vipswap/vipswap/wire"
)

// instanceCheck returns the last check of slot's instance at addr.
func instanceCheck(n *node, slot, addr string) (bool, string) {
	for _, s := range n.ctrl.Status().Slots {
		if s.Name != slot {
			continue
		}
		for _, i := range s.Instances {
			if i.Addr == addr && i.Check != nil {
				return i.Healthy, i.Check.Text
			}
		}
	}
	return false, "not checked yet"
}

// TestGRPCHealthAndH2CSlots: with health.type grpc, an instance whose
// health service serves slot blue is healthy in blue; one that serves only
// blue is not healthy in green (NOT_FOUND); prod reaches blue's instance
// over h2c.
func TestGRPCHealthAndH2CSlots(t *testing.T) {
	dir := t.TempDir()
	b := grpctest.Start(t, "b1", nil, "blue")
	g := grpctest.Start(t, "g1", nil, "blue")
	path := writeConfig(t, dir, staticSlot("blue", b.Addr)+"    protocol: h2c\n", staticSlot("green", g.Addr)+"    protocol: h2c\n")
	raw, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(raw), "  fall: 1\n", "  fall: 1\n  type: grpc\n", 1)), 0o600)
	n, _ := startNode(t, path)
	vstest.WaitFor(t, 30*time.Second, func() error {
		if ok, text := instanceCheck(n, "blue", b.Addr); !ok {
			return fmt.Errorf("blue's instance: %s", text)
		}
		if ok, text := instanceCheck(n, "green", g.Addr); ok || !strings.Contains(text, "NOT_FOUND") {
			return fmt.Errorf("green's instance, which serves blue only: healthy %v, %s", ok, text)
		}
		return nil
	})
	frame := func(msg string) []byte {
		f := make([]byte, 5, 5+len(msg))
		binary.BigEndian.PutUint32(f[1:], uint32(len(msg)))
		return append(f, msg...)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+n.prodLn.Addr().String()+grpctest.Unary, bytes.NewReader(frame("hi")))
	req.Header.Set("Content-Type", "application/grpc+raw")
	req.Header.Set("Te", "trailers")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, frame("b1: hi")) || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("prod: %d %q %v, want b1's answer with grpc-status 0", resp.StatusCode, body, resp.Trailer)
	}
}

// TestSlotTLSReload: a slot reached over TLS with its CA and server name
// is probed and served over TLS; a reload whose CA file went bad is
// refused on one line naming it, and the TLS in force goes on.
func TestSlotTLSReload(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	mux := http.NewServeMux()
	mux.Handle("GET /api/ping", slotapp.Ping("blue"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, fmt.Sprintf("blue tls=%v", r.TLS != nil))
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	path := writeConfig(t, dir, staticSlot("blue", srv.Listener.Addr().String())+"    tls: {ca: app.internal.crt, server_name: app.internal}\n",
		staticSlot("green", protoInstance(t, "green")))
	n, _ := startNode(t, path)
	prod := "http://" + n.prodLn.Addr().String() + "/"
	vstest.WaitFor(t, 30*time.Second, func() error {
		if body, err := get(prod); err != nil || body != "blue tls=true" {
			return fmt.Errorf("prod: %q %v", body, err)
		}
		return nil
	})
	os.WriteFile(filepath.Join(dir, "app.internal.crt"), []byte("garbage"), 0o600)
	_, err := n.reload(context.Background(), wire.ChangeRequest{})
	if err == nil || !strings.Contains(err.Error(), "slots.blue.tls.ca: "+filepath.Join(dir, "app.internal.crt")+" holds no PEM certificate") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("reload with a bad CA: %v; want it refused on one line", err)
	}
	for range 5 {
		if body, err := get(prod); err != nil || body != "blue tls=true" {
			t.Fatalf("after the refused reload: %q %v", body, err)
		}
	}
}
