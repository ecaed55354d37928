package proxy

import (
	"net"
	"net/netip"

	"github.com/vipswap/vipswap/proxy/proxyproto"
)

// proxyHeader returns the PROXY protocol header (version 1 or 2) that
// names client (a request's RemoteAddr) to the instance at instance; one
// that names no client (UNKNOWN, LOCAL) when client is not an IP address
// and port.
func proxyHeader(version int, client string, instance net.Addr) []byte {
	src, _ := netip.ParseAddrPort(client)
	var dst netip.AddrPort
	if a, ok := instance.(*net.TCPAddr); ok {
		dst = a.AddrPort()
	}
	if version == 1 {
		return proxyproto.AppendV1(nil, src, dst)
	}
	return proxyproto.AppendV2(nil, src, dst)
}
