package node

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/vipswap/vipswap/internal/grpctest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// TestGRPCEndToEnd: grpc-go clients through an h2c prod listener to h2c
// gRPC instances checked with grpc health: unary calls, a bidirectional
// stream that stays on blue across a swap to green and ends cleanly, new
// calls on green after it, and UNAVAILABLE from vipswap, counted as
// failed, once no instance is left.
func TestGRPCEndToEnd(t *testing.T) {
	dir := t.TempDir()
	b := grpctest.Start(t, "b1", nil, "blue")
	g := grpctest.Start(t, "g1", nil, "green")
	path := writeConfig(t, dir, staticSlot("blue", b.Addr)+"    protocol: h2c\n", staticSlot("green", g.Addr)+"    protocol: h2c\n")
	raw, _ := os.ReadFile(path)
	text := strings.Replace(string(raw), "  fall: 1\n", "  fall: 1\n  type: grpc\n", 1)
	text = strings.Replace(text, "  prod: 127.0.0.1:0\n", "  prod:\n    addr: 127.0.0.1:0\n    h2c: true\n", 1)
	text = strings.Replace(text, "health:\n", "proxy:\n  hold: 200ms\nhealth:\n", 1)
	os.WriteFile(path, []byte(text), 0o600)
	n, _ := startNode(t, path)
	cc, err := grpc.NewClient("passthrough:///"+n.prodLn.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := func(msg string) (string, error) {
		in, out := []byte(msg), []byte(nil)
		err := cc.Invoke(ctx, grpctest.Unary, &in, &out, grpc.CallContentSubtype(grpctest.Codec))
		return string(out), err
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if got, err := call("hi"); err != nil || got != "b1: hi" {
			return fmt.Errorf("prod: %q %v", got, err)
		}
		return nil
	})
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, grpctest.Bidi, grpc.CallContentSubtype(grpctest.Codec))
	if err != nil {
		t.Fatal(err)
	}
	echo := func(msg, want string) {
		t.Helper()
		in, out := []byte(msg), []byte(nil)
		if err := st.SendMsg(&in); err != nil {
			t.Fatal(err)
		}
		if err := st.RecvMsg(&out); err != nil || string(out) != want {
			t.Fatalf("stream: %q %v, want %q", out, err, want)
		}
	}
	echo("before", "b1: before")
	if _, err := n.ctrl.Swap(ctx, wire.ChangeRequest{Reason: "green takes prod"}); err != nil {
		t.Fatal(err)
	}
	if got, err := call("after"); err != nil || got != "g1: after" {
		t.Fatalf("a new call after the swap: %q %v, want green's answer", got, err)
	}
	echo("during", "b1: during") // the open stream stays where it began
	st.CloseSend()
	var out []byte
	if err := st.RecvMsg(&out); err != io.EOF {
		t.Fatalf("end of the stream: %v", err)
	}
	before := n.px.Failed(route.Prod)
	g.Stop()
	vstest.WaitFor(t, 30*time.Second, func() error {
		_, err := call("x")
		if s, _ := status.FromError(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "vipswap") {
			return fmt.Errorf("with green's instance gone: %v, want UNAVAILABLE from vipswap", err)
		}
		return nil
	})
	if n.px.Failed(route.Prod) <= before {
		t.Error("vipswap's UNAVAILABLE answers were not counted as failed")
	}
}
