// Package grpctest is a gRPC instance for tests: a grpc-go server with the
// standard health service (grpc.health.v1) serving the slots asked, and an
// echo service of raw bytes (no generated code): a unary method and a
// bidirectional stream, called with the content subtype "raw".
package grpctest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Codec is the content subtype of the echo service's messages: raw bytes
// (*[]byte), as they are.
const Codec = "raw"

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: want *[]byte, got %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: want *[]byte, got %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return Codec }

func init() { encoding.RegisterCodec(rawCodec{}) }

// Method names of the echo service.
const (
	// Unary answers "NAME: MESSAGE". A message "status N" is answered
	// with gRPC status N instead, and so is every nth call with the
	// status Fail asked for.
	Unary = "/vipswap.test.Echo/Unary"
	// Bidi answers each message with "NAME: MESSAGE" as it arrives, until
	// the client ends its side.
	Bidi = "/vipswap.test.Echo/Bidi"
)

// Server is a running gRPC instance.
type Server struct {
	// Addr is where it listens.
	Addr string
	// Health sets the slots' serving status.
	Health *health.Server
	// Calls counts the echo calls it received.
	Calls atomic.Int64
	// Metadata is the last call's request metadata.
	Metadata atomic.Pointer[metadata.MD]
	// Deadlines counts the echo calls that came with a deadline
	// (grpc-timeout).
	Deadlines atomic.Int64
	// Open is how many echo calls are running.
	Open atomic.Int64
	// Failures counts the unary calls answered with an injected failure
	// (Fail).
	Failures atomic.Int64

	name  string
	srv   *grpc.Server
	unary atomic.Int64              // unary calls received, for Fail's count
	fail  atomic.Pointer[injection] // what Fail asked, nil for nothing
}

// Injected is in the message of every failure Fail injects ("NAME:
// injected failure"): a client tells the application's injected errors
// from any other by it.
const Injected = "injected failure"

// injection is a failure Fail injects.
type injection struct {
	code  codes.Code
	every int64
}

// Fail makes every nth unary call from now on fail with code, as the
// application's own status, its message naming the instance and Injected;
// n <= 0 stops it. The bidirectional stream is never failed.
func (s *Server) Fail(code codes.Code, n int64) {
	if n <= 0 {
		s.fail.Store(nil)
		return
	}
	s.fail.Store(&injection{code: code, every: n})
}

// Start starts an instance named name whose health service says SERVING
// for each slot in serving (and NOT_FOUND for any other); over TLS when
// conf is set, h2c otherwise. It stops when the test ends.
func Start(t testing.TB, name string, conf *tls.Config, serving ...string) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if conf != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(conf)))
	}
	s := &Server{Addr: ln.Addr().String(), Health: health.NewServer(), name: name, srv: grpc.NewServer(opts...)}
	for _, slot := range serving {
		s.Health.SetServingStatus(slot, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s.srv, s.Health)
	s.srv.RegisterService(&echoDesc, s)
	go s.srv.Serve(ln)
	t.Cleanup(s.srv.Stop)
	return s
}

// Stop stops the instance at once.
func (s *Server) Stop() { s.srv.Stop() }

func (s *Server) record(ctx context.Context) {
	s.Calls.Add(1)
	if _, ok := ctx.Deadline(); ok {
		s.Deadlines.Add(1)
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		s.Metadata.Store(&md)
	}
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "vipswap.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			s := srv.(*Server)
			s.record(ctx)
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			count := s.unary.Add(1)
			if f := s.fail.Load(); f != nil && count%f.every == 0 {
				s.Failures.Add(1)
				return nil, status.Error(f.code, s.name+": "+Injected)
			}
			if n, ok := strings.CutPrefix(string(in), "status "); ok {
				code, _ := strconv.Atoi(n)
				return nil, status.Error(codes.Code(code), "asked for status "+n)
			}
			out := []byte(s.name + ": " + string(in))
			return &out, nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName: "Bidi", ServerStreams: true, ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			s := srv.(*Server)
			s.record(stream.Context())
			s.Open.Add(1)
			defer s.Open.Add(-1)
			for {
				var in []byte
				if err := stream.RecvMsg(&in); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
				out := []byte(s.name + ": " + string(in))
				if err := stream.SendMsg(&out); err != nil {
					return err
				}
			}
		},
	}},
}
