package proxy

import (
	"net/http"
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
