// Package proxyproto reads and writes the PROXY protocol header, versions 1
// (text) and 2 (binary), with which a load balancer in front of vipswap
// tells it the address of the client it relays, and vipswap tells its
// instances theirs.
//
// Reading is strict and bounded: a version 1 line is at most 107 bytes, a
// version 2 header at most MaxV2 bytes, and anything that is not exactly a
// header is an error, never a guess. A header whose command is LOCAL, or
// whose family is not TCP over IPv4 or IPv6 (UNKNOWN, UDP, UNIX), names no
// client: the connection keeps its peer's address, as the specification
// asks.
//
// The package uses the standard library only: it sits on the request path.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MaxV1 is the longest version 1 header, CRLF included (the
// specification's bound).
const MaxV1 = 107

// MaxV2 bounds a version 2 header, its 16 fixed bytes, addresses and TLVs
// included. The specification allows 65551; the TLVs load balancers add
// (cloud endpoint ids, TLS facts) take a few hundred bytes, so a longer
// header is refused rather than buffered.
const MaxV2 = 4096

// sigV2 starts every version 2 header.
var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// sigV1 starts every version 1 header.
var sigV1 = []byte("PROXY ")

// ErrNotProxy says that the bytes do not start a PROXY header.
var ErrNotProxy = errors.New("proxyproto: no PROXY protocol header")

// Header is what a PROXY header says.
type Header struct {
	// Version is 1 or 2.
	Version int
	// Source is the client's address and port, Dest the address it
	// connected to; both invalid when the header names no client (LOCAL,
	// UNKNOWN, or a family other than TCP over IPv4 or IPv6).
	Source, Dest netip.AddrPort
}

// Parse reads the header at the start of b. It returns the header and its
// length in bytes; a length of 0 with a nil error means b is the start of
// a header and more bytes are needed. It returns ErrNotProxy when b does
// not start a header (b may then be anything else: an HTTP request, a TLS
// handshake), and another error when it starts one that is malformed or
// too long.
func Parse(b []byte) (Header, int, error) {
	switch {
	case hasPrefix(b, sigV2):
		if len(b) < len(sigV2) {
			return Header{}, 0, nil
		}
		return parseV2(b)
	case hasPrefix(b, sigV1):
		if len(b) < len(sigV1) {
			return Header{}, 0, nil
		}
		return parseV1(b)
	}
	return Header{}, 0, ErrNotProxy
}

// hasPrefix reports whether b and sig agree as far as both go (b may be
// shorter than sig), and b is not empty.
func hasPrefix(b, sig []byte) bool {
	n := min(len(b), len(sig))
	return n > 0 && bytes.Equal(b[:n], sig[:n])
}

func parseV1(b []byte) (Header, int, error) {
	end := bytes.IndexByte(b[:min(len(b), MaxV1)], '\n')
	if end < 0 {
		if len(b) >= MaxV1 {
			return Header{}, 0, errors.New("proxyproto: version 1 header longer than 107 bytes")
		}
		return Header{}, 0, nil
	}
	if end == 0 || b[end-1] != '\r' {
		return Header{}, 0, errors.New("proxyproto: version 1 header not ended by CRLF")
	}
	line := string(b[len(sigV1) : end-1])
	n := end + 1
	f := strings.Split(line, " ") // an empty field (two spaces) stays, and is refused
	if len(f) >= 1 && f[0] == "UNKNOWN" {
		return Header{Version: 1}, n, nil // the rest of the line is to be ignored
	}
	if len(f) != 5 || f[0] != "TCP4" && f[0] != "TCP6" {
		return Header{}, 0, fmt.Errorf("proxyproto: malformed version 1 header %q", clip(line))
	}
	src, err1 := netip.ParseAddr(f[1])
	dst, err2 := netip.ParseAddr(f[2])
	sp, err3 := port(f[3])
	dp, err4 := port(f[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Header{}, 0, fmt.Errorf("proxyproto: malformed version 1 header %q", clip(line))
	}
	v4 := f[0] == "TCP4"
	if src.Zone() != "" || dst.Zone() != "" || src.Is4() != v4 || dst.Is4() != v4 {
		return Header{}, 0, fmt.Errorf("proxyproto: version 1 header's addresses are not %s: %q", f[0], clip(line))
	}
	return Header{Version: 1, Source: netip.AddrPortFrom(src.Unmap(), sp), Dest: netip.AddrPortFrom(dst.Unmap(), dp)}, n, nil
}

// port parses a decimal port, digits only.
func port(s string) (uint16, error) {
	if s == "" || len(s) > 5 || s[0] == '+' || s[0] == '-' {
		return 0, errors.New("bad port")
	}
	p, err := strconv.ParseUint(s, 10, 16)
	return uint16(p), err
}

// clip shortens what a message quotes.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func parseV2(b []byte) (Header, int, error) {
	if len(b) < 16 {
		return Header{}, 0, nil
	}
	if b[12]>>4 != 2 {
		return Header{}, 0, fmt.Errorf("proxyproto: version 2 header with version %d", b[12]>>4)
	}
	cmd := b[12] & 0xf
	if cmd > 1 {
		return Header{}, 0, fmt.Errorf("proxyproto: version 2 header with unknown command %d", cmd)
	}
	size := 16 + int(binary.BigEndian.Uint16(b[14:16]))
	if size > MaxV2 {
		return Header{}, 0, fmt.Errorf("proxyproto: version 2 header of %d bytes, more than %d", size, MaxV2)
	}
	if len(b) < size {
		return Header{}, 0, nil
	}
	h := Header{Version: 2}
	if cmd == 0 { // LOCAL: the balancer's own connection (a health check)
		return h, size, nil
	}
	body := b[16:size]
	switch b[13] {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return Header{}, 0, errors.New("proxyproto: version 2 TCP4 header too short for its addresses")
		}
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:10]))
		h.Dest = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:12]))
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return Header{}, 0, errors.New("proxyproto: version 2 TCP6 header too short for its addresses")
		}
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])).Unmap(), binary.BigEndian.Uint16(body[32:34]))
		h.Dest = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])).Unmap(), binary.BigEndian.Uint16(body[34:36]))
	}
	// Any other family (UNSPEC, UDP, UNIX) names no TCP client: the
	// connection keeps its peer's address.
	return h, size, nil
}

// AppendV1 appends a version 1 header for a connection from src to dst.
// With an invalid src it says UNKNOWN. Addresses of two families are
// written as IPv6 (an IPv4 one mapped).
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	s, d, v4, ok := pair(src, dst)
	if !ok {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	fam := "TCP6"
	if v4 {
		fam = "TCP4"
	}
	b = fmt.Appendf(b, "PROXY %s %s %s %d %d\r\n", fam, s, d, src.Port(), dst.Port())
	return b
}

// AppendV2 appends a version 2 header, without TLVs, for a connection
// from src to dst. With an invalid src it is a LOCAL header.
func AppendV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, sigV2...)
	s, d, v4, ok := pair(src, dst)
	switch {
	case !ok:
		return append(b, 0x20, 0x00, 0, 0)
	case v4:
		b = append(b, 0x21, 0x11, 0, 12)
		b = append(b, s.AsSlice()...)
		b = append(b, d.AsSlice()...)
	default:
		b = append(b, 0x21, 0x21, 0, 36)
		b = append(b, s.AsSlice()...)
		b = append(b, d.AsSlice()...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// pair returns src's and dst's addresses in one family: IPv4 if both are,
// IPv6 (IPv4 ones mapped) otherwise; ok is false when either is invalid.
func pair(src, dst netip.AddrPort) (s, d netip.Addr, v4, ok bool) {
	if !src.IsValid() || !dst.IsValid() {
		return s, d, false, false
	}
	s, d = src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
	if s.Is4() && d.Is4() {
		return s, d, true, true
	}
	if s.Is4() {
		s = netip.AddrFrom16(s.As16())
	}
	if d.Is4() {
		d = netip.AddrFrom16(d.As16())
	}
	return s, d, false, true
}
