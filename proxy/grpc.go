package proxy

import (
	"net/http"
	"strconv"
	"strings"
)

// isGRPC reports whether a message is gRPC: its Content-Type is
// application/grpc, alone or with a suffix (+proto, ;charset=...).
func isGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	v := ct[0]
	return len(v) >= 16 && strings.EqualFold(v[:16], "application/grpc") &&
		(len(v) == 16 || v[16] == '+' || v[16] == ';')
}

// grpcStatus returns the grpc-status of an instance's gRPC answer read
// whole: in its trailers, or in its head for a trailers-only answer. An
// answer without one, or with one that is no number, is UNKNOWN (2), as a
// gRPC client takes it; -1 when the answer is no gRPC one.
func grpcStatus(resp *http.Response) int {
	v, ok := resp.Trailer["Grpc-Status"]
	if !ok {
		v, ok = resp.Header["Grpc-Status"]
	}
	if !ok || len(v) == 0 {
		return 2
	}
	n, err := strconv.Atoi(strings.TrimSpace(v[0]))
	if err != nil || n < 0 {
		return 2
	}
	return n
}

// grpcMessage percent-encodes a grpc-message value as gRPC's HTTP/2
// mapping asks: every byte outside printable ASCII, and %.
func grpcMessage(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
