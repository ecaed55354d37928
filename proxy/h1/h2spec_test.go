package h1

import (
	"encoding/xml"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// h2specKnown are the h2spec cases that cannot pass, by id, and why;
// those marked h2c only there.
var h2specKnown = map[string]struct {
	why     string
	h2cOnly bool
}{
	// x/net refuses a SETTINGS frame that names a setting twice (a guard
	// against crafted SETTINGS) with a PROTOCOL_ERROR; h2spec wants the
	// values applied in order.
	"http2/6.5.3/1": {why: "x/net refuses a SETTINGS frame that repeats a setting"},
	// x/net answers a request with a connection-specific header field
	// (Connection, Keep-Alive, Upgrade, TE but trailers...) with its own
	// 400 rather than a stream reset; the request never reaches the
	// handler either way.
	"http2/8.1.2.2/1": {why: "x/net answers a connection-specific header with a 400, not a stream reset"},
	"http2/8.1.2.2/2": {why: "x/net answers a TE other than trailers with a 400, not a stream reset"},
	// On an h2c listener, a connection that does not open with the
	// preface is HTTP/1.1 (prior knowledge, by design): the HTTP/1.1
	// server answers the bytes with a 400 and closes, where h2spec wants
	// an HTTP/2 GOAWAY.
	"http2/3.5/2": {why: "on an h2c listener, what is not the preface is HTTP/1.1", h2cOnly: true},
}

// TestH2Spec runs h2spec (HTTP/2 conformance: RFC 7540/9113 and HPACK)
// against a TLS listener and an h2c one. scripts/test.sh installs it
// (go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible).
func TestH2Spec(t *testing.T) {
	bin, err := exec.LookPath("h2spec")
	if err != nil {
		// Where go install puts it, when that is not on PATH.
		bin = filepath.Join(build.Default.GOPATH, "bin", "h2spec")
		_, err = os.Stat(bin)
	}
	if err != nil {
		msg := "h2spec is not installed: scripts/test.sh installs it (go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible)"
		if os.Getenv("VIPSWAP_SKIP_MISSING") == "1" {
			t.Skip(msg + "; skipped, as SKIP_INSTALL=1 asked")
		}
		t.Fatal(msg)
	}
	// h2spec's requests go to a handler that reads the body and answers,
	// as the proxy does; its DATA cases need a body to be read.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	forBoth(t, func(t *testing.T, secure bool) {
		s := &Server{Handler: handler, HTTP2: true, H2C: !secure}
		addr, _ := startH2(t, s, secure)
		_, port, _ := net.SplitHostPort(addr)
		report := filepath.Join(t.TempDir(), "report.xml")
		args := []string{"-h", "127.0.0.1", "-p", port, "-o", "5", "-j", report}
		if secure {
			args = append(args, "-t", "-k")
		}
		cmd := exec.Command(bin, args...)
		cmd.WaitDelay = time.Minute
		out, runErr := cmd.CombinedOutput()
		raw, err := os.ReadFile(report)
		if err != nil {
			t.Fatalf("h2spec wrote no report (%v): %s", runErr, out)
		}
		var suites struct {
			Suites []struct {
				Name  string `xml:"name,attr"`
				Cases []struct {
					Name    string `xml:"classname,attr"`
					Package string `xml:"package,attr"`
					Failure *struct {
						Text string `xml:",chardata"`
					} `xml:"failure"`
					Error *struct {
						Text string `xml:",chardata"`
					} `xml:"error"`
				} `xml:"testcase"`
			} `xml:"testsuite"`
		}
		if err := xml.Unmarshal(raw, &suites); err != nil {
			t.Fatal(err)
		}
		passed := 0
		for _, s := range suites.Suites {
			for i, c := range s.Cases {
				id := fmt.Sprintf("%s/%d", c.Package, i+1)
				known, isKnown := h2specKnown[id]
				switch {
				case c.Failure == nil && c.Error == nil:
					passed++
				case isKnown && (!known.h2cOnly || !secure):
					t.Logf("known: %s (%s): %s", id, c.Name, known.why)
				default:
					msg := ""
					if c.Failure != nil {
						msg = c.Failure.Text
					} else {
						msg = c.Error.Text
					}
					t.Errorf("h2spec %s (%s %s): %s", id, s.Name, c.Name, strings.TrimSpace(msg))
				}
			}
		}
		if passed < 100 {
			t.Fatalf("only %d h2spec cases passed: %s", passed, out)
		}
		t.Logf("%d h2spec cases passed", passed)
	})
}
