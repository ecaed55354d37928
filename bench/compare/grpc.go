//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// The gRPC service the backends serve: /bench.Echo/Unary answers every
// request with grpcReply. Messages are raw bytes (the "raw" codec, content
// type application/grpc+raw), so no generated code is needed.
const grpcMethod = "/bench.Echo/Unary"

var (
	grpcRequest = []byte("vipswap bench request")
	grpcReply   = []byte(`{"slot":"bench","version":"1","instance":"backend-0000000"}` + "\n")
)

// rawCodec passes *[]byte messages through as they are.
type rawCodec struct{}

func (rawCodec) Name() string { return "raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func init() { encoding.RegisterCodec(rawCodec{}) }

var echoService = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			return &grpcReply, nil
		},
	}},
}

// serveGRPC serves the echo service and grpc.health.v1 (SERVING for every
// service name the bench's slots use) over h2c on ln.
func serveGRPC(ln net.Listener) error {
	s := grpc.NewServer()
	s.RegisterService(&echoService, struct{}{})
	hs := health.NewServer()
	for _, name := range []string{"", "blue", "green"} {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s, hs)
	return s.Serve(ln)
}

func dialGRPC(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype("raw")))
}

// callGRPC makes one unary call and checks its answer.
func callGRPC(ctx context.Context, cc *grpc.ClientConn) error {
	var reply []byte
	req := grpcRequest
	if err := cc.Invoke(ctx, grpcMethod, &req, &reply); err != nil {
		return errors.New(status.Convert(err).String())
	}
	if !bytes.Equal(reply, grpcReply) {
		return fmt.Errorf("answer %.60q is not the backend's", reply)
	}
	return nil
}

// checkGRPC makes one call to addr over h2c and says what is wrong if it
// does not end with status OK and the backend's answer.
func checkGRPC(addr string) error {
	cc, err := dialGRPC(addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return callGRPC(ctx, cc)
}

// runGRPCLoad is the "grpcload" subcommand: calls workers spread over
// conns connections make unary calls back to back for d.
func runGRPCLoad(addr string, conns, calls int, d time.Duration) loadReport {
	ccs := make([]*grpc.ClientConn, conns)
	for i := range ccs {
		cc, err := dialGRPC(addr)
		if err != nil {
			return loadReport{Errors: 1, FirstError: err.Error()}
		}
		defer cc.Close()
		cc.Connect()
		ccs[i] = cc
	}
	return runWorkers(calls, d, func(i int) func() error {
		cc := ccs[i%conns]
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return callGRPC(ctx, cc)
		}
	})
}
