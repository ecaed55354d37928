package h1

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzPlainTargetMatchesNetURL checks the URL a plain origin-form target
// is read into without url.ParseRequestURI: it must be the one that
// function makes, field for field.
func FuzzPlainTargetMatchesNetURL(f *testing.F) {
	for _, seed := range []string{"/", "/a/b", "/a?b=1&c", "/a?", "/a??", "/a?b?c", "//x/y", "/a;b,c=d@e:f$g&h+i~j_k-l.m",
		"/%41", "/a%2Fb", "/a!b", "/a'b", "/a(b)", "/a*b", "/a#b", "/a?b#c", "/é", "/a\"b", "/a|b", "/a{b}", "/a^b", "/a`b", "/a\\b", "/?", "/??"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, target string) {
		var u url.URL
		got, uri, err := parseTarget(http.MethodGet, target, &u)
		if !plainOrigin(target) || err != nil {
			return
		}
		if got != &u || uri != target {
			t.Fatalf("%q: a plain target read into a new URL, or target %q", target, uri)
		}
		want, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("%q read as plain, but url.ParseRequestURI refuses it: %v", target, err)
		}
		if *got != *want {
			t.Fatalf("%q read as %#v, url.ParseRequestURI reads %#v", target, *got, *want)
		}
	})
}

// A connection's requests are read into the same request, URL and header
// map one after another: the next request must see nothing of the one
// before, and what a handler kept of the one before as strings stays as
// it was.
func TestARequestSeesNothingOfTheOneBeforeOnItsConnection(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	var kept []string // values kept by the handler, as strings
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s q=%s a=%q b=%q n=%d", r.Method, r.URL.Path, r.URL.RawQuery, r.Header["X-A"], r.Header["X-B"], len(r.Header)))
		kept = append(kept, r.Header.Get("X-A"), r.URL.Path)
		mu.Unlock()
		r.Header["X-Added-By-Handler"] = []string{"h"}
		w.Write([]byte("ok"))
	})
	_, addr := start(t, &Server{Handler: h})
	conn, br := dial(t, addr)
	io.WriteString(conn, "GET /one?x=1 HTTP/1.1\r\nHost: x\r\nX-A: first\r\nX-A: second\r\nX-B: b\r\n\r\n")
	read(t, br, "GET")
	io.WriteString(conn, "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	read(t, br, "POST")
	io.WriteString(conn, "GET /%74hree HTTP/1.1\r\nHost: x\r\nX-A: third\r\n\r\n")
	read(t, br, "GET")
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		`GET /one q=x=1 a=["first" "second"] b=["b"] n=2`,
		`POST /two q= a=[] b=[] n=1`,
		`GET /three q= a=["third"] b=[] n=1`,
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the handler saw:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	if got := strings.Join(kept, ","); got != "first,/one,,/two,third,/three" {
		t.Fatalf("values kept from earlier requests changed: %s", got)
	}
}

// AfterCancel on a request's context runs its callback when the client
// hangs up during a slow request, and not once the watch was stopped; on
// any other context it is context.AfterFunc.
func TestAfterCancel(t *testing.T) {
	fired := make(chan string, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stopped":
			stop := AfterCancel(r.Context(), func() { fired <- "stopped" })
			if !stop() {
				t.Error("stop of a pending watch reported false")
			}
			if stop() {
				t.Error("a second stop reported true")
			}
			w.Write([]byte("ok"))
		case "/slow":
			// Two watches at once: the second goes to context.AfterFunc.
			AfterCancel(r.Context(), func() { fired <- "first" })
			AfterCancel(r.Context(), func() { fired <- "second" })
			<-r.Context().Done()
		}
	})
	_, addr := start(t, &Server{Handler: h})
	conn, br := dial(t, addr)
	io.WriteString(conn, "GET /stopped HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, br, "GET")
	io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.Close() // seen once the server watches the request for a hang-up
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case f := <-fired:
			if f == "stopped" {
				t.Fatal("a stopped watch ran")
			}
			got[f] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("after the client hung up, only %v ran", got)
		}
	}
	var ran = make(chan bool, 1)
	ctx, cancel := context.WithCancel(context.Background())
	stop := AfterCancel(ctx, func() { ran <- true })
	cancel()
	if <-ran; stop() {
		t.Fatal("stop after the callback ran reported true")
	}
}
