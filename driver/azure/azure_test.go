package azure

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/route"
)

// A VIP answers in every way but the right one: the wait reports, in one
// line, with the last answer and the rollback offered.
func TestConfirmHostileVIP(t *testing.T) {
	var n atomic.Int64
	vip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 4 {
		case 0:
			w.Write([]byte(strings.Repeat("x", 1<<20))) // oversized, not JSON
		case 1:
			http.Error(w, "down", http.StatusBadGateway)
		case 2:
			w.Write([]byte(`{"slot": `)) // truncated JSON
		default:
			w.Write([]byte(`{"slot":"blue"}`))
		}
	}))
	defer vip.Close()
	c := Confirm{URL: vip.URL + "/api/test", Window: 3, Every: time.Millisecond, Deadline: 500 * time.Millisecond}
	_, err := c.Wait(context.Background(), "green")
	var nc *NotConvergedError
	if !errors.As(err, &nc) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "vipswap rollback") {
		t.Fatalf("wait on a VIP that never answers green: %v", err)
	}
	if len(err.Error()) > 600 {
		t.Fatalf("the error carries too much of the answers: %d bytes", len(err.Error()))
	}
	if n.Load() < 4 {
		t.Fatalf("the VIP was asked %d times", n.Load())
	}
}

// The window counts answers in a row: one stray answer starts it again.
func TestConfirmWindowIsInARow(t *testing.T) {
	var n atomic.Int64
	vip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// green, green, blue, then green for good
		if i := n.Add(1); i == 3 {
			w.Write([]byte(`{"slot":"blue"}`))
			return
		}
		w.Write([]byte(`{"slot":"green"}`))
	}))
	defer vip.Close()
	c := Confirm{URL: vip.URL, Window: 4, Every: time.Millisecond, Deadline: 30 * time.Second}
	if _, err := c.Wait(context.Background(), "green"); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 7 {
		t.Fatalf("asked %d times, want 7 (2 green, 1 blue, then 4 green in a row)", got)
	}
}

func TestConfirmSplitNeedsEverySlot(t *testing.T) {
	var n atomic.Int64
	vip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%5 == 0 {
			w.Write([]byte("green")) // a plain-text answer names its slot too
			return
		}
		w.Write([]byte(`{"slot":"blue"}`))
	}))
	defer vip.Close()
	c := Confirm{URL: vip.URL, Window: 3, Every: time.Millisecond, Deadline: 30 * time.Second}
	if _, err := c.WaitSplit(context.Background(), []string{"blue", "green"}); err != nil {
		t.Fatal(err)
	}
	if n.Load() < 5 {
		t.Fatalf("a split confirmed after %d answers, before green answered", n.Load())
	}
}

func TestWholeRefusesASplit(t *testing.T) {
	if s, err := Whole("azure_lb", []route.Weighted{{Slot: "blue", Weight: 1000}, {Slot: "green", Weight: 0}}); s != "blue" || err != nil {
		t.Fatalf("whole: %q %v", s, err)
	}
	if _, err := Whole("azure_lb", []route.Weighted{{Slot: "blue", Weight: 900}, {Slot: "green", Weight: 100}}); err == nil || !strings.Contains(err.Error(), "azure_frontdoor") {
		t.Fatalf("a split: %v", err)
	}
}

func TestFirstLine(t *testing.T) {
	for in, want := range map[string]string{
		"DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n\tEnvironmentCredential: missing": "DefaultAzureCredential: failed to acquire a token.",
		"\n-----\n  RESPONSE 404  \n": "RESPONSE 404",
		"":                            "(no detail)",
		strings.Repeat("a", 1000):     strings.Repeat("a", 300) + "…",
	} {
		if got := FirstLine(in); got != want {
			t.Errorf("FirstLine(%.40q) = %.40q, want %.40q", in, got, want)
		}
	}
}

// A VIP that redirects is not followed: the answer of wherever it points
// is not the VIP's, and a redirect is no slot's answer.
func TestConfirmDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Write([]byte(`{"slot":"green"}`))
	}))
	defer other.Close()
	vip := httptest.NewServer(http.RedirectHandler(other.URL+"/api/test", http.StatusFound))
	defer vip.Close()
	c := Confirm{URL: vip.URL + "/api/test", Window: 3, Every: time.Millisecond, Deadline: 300 * time.Millisecond}
	_, err := c.Wait(context.Background(), "green")
	var nc *NotConvergedError
	if !errors.As(err, &nc) || !strings.Contains(err.Error(), "302") {
		t.Fatalf("wait on a VIP that redirects: %v, want not converged naming the redirect", err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect was followed %d times", n)
	}
}
