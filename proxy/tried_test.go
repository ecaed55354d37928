package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A request that cannot go again after the instance closed its pooled
// connection under it (a POST it read whole, then dropped) fails naming
// the instance as tried, not "0 tried".
func TestAFailureOnAConnectionTheInstanceLetGoCountsItsTry(t *testing.T) {
	var mu sync.Mutex
	served := map[net.Conn]int{}
	inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		mu.Lock()
		served[c]++
		n := served[c]
		mu.Unlock()
		if n > 1 {
			return false // the second request on a connection: read, never answered
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	prod, p := proxyOf(t, Options{unsafeReuseWithin: time.Hour}, inst)
	client := &http.Client{}
	resp, err := client.Get(prod)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitReusable(t, p, inst)
	resp, err = client.Post(prod, "text/plain", strings.NewReader("once"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "(1 tried)") {
		t.Fatalf("got %d %q, want a 502 saying the instance was tried once", resp.StatusCode, body)
	}
}
