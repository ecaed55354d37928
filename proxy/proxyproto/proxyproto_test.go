package proxyproto

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	v2 := func(cmd, fam byte, body []byte) []byte {
		b := append([]byte{}, sigV2...)
		b = append(b, 0x20|cmd, fam)
		b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
		return append(b, body...)
	}
	tlv := append(append([]byte{}, netip.MustParseAddr("203.0.113.7").AsSlice()...), netip.MustParseAddr("10.0.0.1").AsSlice()...)
	tlv = append(tlv, 0x30, 0x39, 0x01, 0xbb, 0x04, 0x00, 0x02, 'h', 'i') // ports, then a TLV
	for _, tc := range []struct {
		name string
		in   []byte
		src  string // "" for none
	}{
		{"v1 tcp4", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 12345 443\r\n"), "203.0.113.7:12345"},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 12345 443\r\n"), "[2001:db8::7]:12345"},
		{"v1 tcp6 mapped", []byte("PROXY TCP6 ::ffff:203.0.113.7 ::1 1 2\r\n"), "203.0.113.7:1"},
		{"v1 unknown", []byte("PROXY UNKNOWN whatever follows\r\n"), ""},
		{"v1 unknown bare", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v2 tcp4 with tlv", v2(1, 0x11, tlv), "203.0.113.7:12345"},
		{"v2 local", v2(0, 0x00, nil), ""},
		{"v2 unix", v2(1, 0x31, make([]byte, 216)), ""},
		{"v2 udp4", v2(1, 0x12, make([]byte, 12)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte{}, tc.in...), "GET / HTTP/1.1\r\n"...)
			h, n, err := Parse(in)
			if err != nil || n != len(tc.in) {
				t.Fatalf("Parse = %+v, %d, %v; want a header of %d bytes", h, n, err, len(tc.in))
			}
			got := ""
			if h.Source.IsValid() {
				got = h.Source.String()
			}
			if got != tc.src {
				t.Errorf("source %q, want %q", got, tc.src)
			}
			// Every prefix of a header asks for more.
			for i := 1; i < len(tc.in); i++ {
				if _, n, err := Parse(tc.in[:i]); n != 0 || err != nil {
					t.Fatalf("prefix of %d bytes: %d, %v; want a request for more", i, n, err)
				}
			}
		})
	}
}

func TestParseHostile(t *testing.T) {
	huge := append([]byte{}, sigV2...)
	huge = append(huge, 0x21, 0x11, 0xff, 0xff)
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"v1 line too long", "PROXY TCP4 " + strings.Repeat("1", 200)},
		{"v1 long without LF", "PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n"},
		{"v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"},
		{"v1 bad family", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n"},
		{"v1 tcp6 with v4", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n"},
		{"v1 double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"},
		{"v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"},
		{"v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"},
		{"v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"},
		{"v1 signed port", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"},
		{"v1 lower case", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"},
		{"v2 huge length", string(huge)},
		{"v2 version 1", string(sigV2) + "\x11\x11\x00\x0c" + strings.Repeat("\x00", 12)},
		{"v2 bad command", string(sigV2) + "\x22\x11\x00\x0c" + strings.Repeat("\x00", 12)},
		{"v2 tcp4 short", string(sigV2) + "\x21\x11\x00\x04" + strings.Repeat("\x00", 4)},
		{"v2 tcp6 short", string(sigV2) + "\x21\x21\x00\x0c" + strings.Repeat("\x00", 12)},
	} {
		if h, n, err := Parse([]byte(tc.in)); err == nil || err == ErrNotProxy {
			t.Errorf("%s: Parse = %+v, %d, %v; want an error", tc.name, h, n, err)
		}
	}
	for _, in := range []string{"GET / HTTP/1.1\r\n", "\x16\x03\x01", "PROXX", "\r\n\r\n\x00\r\nQUIX", "proxy "} {
		if _, _, err := Parse([]byte(in)); err != ErrNotProxy {
			t.Errorf("Parse(%q) = %v, want ErrNotProxy", in, err)
		}
	}
}

func TestAppendRoundTrip(t *testing.T) {
	for _, tc := range []struct{ src, dst string }{
		{"203.0.113.7:12345", "10.0.0.1:443"},
		{"[2001:db8::7]:1", "[2001:db8::1]:2"},
		{"203.0.113.7:12345", "[::1]:443"}, // two families: written as IPv6
	} {
		src, dst := netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)
		for _, b := range [][]byte{AppendV1(nil, src, dst), AppendV2(nil, src, dst)} {
			h, n, err := Parse(b)
			if err != nil || n != len(b) || h.Source != src {
				t.Errorf("%s→%s: %q parsed as %+v, %d, %v", tc.src, tc.dst, b, h, n, err)
			}
		}
	}
	for _, b := range [][]byte{AppendV1(nil, netip.AddrPort{}, netip.AddrPort{}), AppendV2(nil, netip.AddrPort{}, netip.AddrPort{})} {
		if h, n, err := Parse(b); err != nil || n != len(b) || h.Source.IsValid() {
			t.Errorf("no client: %q parsed as %+v, %d, %v", b, h, n, err)
		}
	}
	if !bytes.HasPrefix(AppendV1(nil, netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("6.7.8.9:10")), []byte("PROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n")) {
		t.Error("v1 header not as the specification writes it")
	}
}
