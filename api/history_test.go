package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

// TestHistoryPages: GET /v1/history answers the same array as before, and
// a Link header leads page by page through every entry exactly once, down
// to the first; bad cursors are a 400.
func TestHistoryPages(t *testing.T) {
	f := newFixture(t, api.Options{})
	for range 11 {
		if code := f.call(t, "POST", "/v1/swap", "", "", nil); code != 200 {
			t.Fatalf("swap: %d", code)
		}
	}
	// 12 entries: the seed and 11 swaps.
	next := "/v1/history?limit=5"
	var ids []string
	pages := 0
	linkRE := regexp.MustCompile(`^<(/v1/history\?limit=5&before=\d+)>; rel="next"$`)
	for next != "" {
		pages++
		resp, err := http.Get(f.url + next)
		if err != nil {
			t.Fatal(err)
		}
		var page []wire.HistoryEntry
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(body, &page); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", next, resp.StatusCode, body)
		}
		for _, e := range page {
			ids = append(ids, fmt.Sprint(e.ID))
		}
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			m := linkRE.FindStringSubmatch(link)
			if m == nil {
				t.Fatalf("Link %q", link)
			}
			next = m[1]
		}
		if pages > 5 {
			t.Fatal("the pages do not end")
		}
	}
	if got := strings.Join(ids, " "); got != "12 11 10 9 8 7 6 5 4 3 2 1" || pages != 3 {
		t.Fatalf("%d pages gave entries %s, want 3 pages of 12 11 ... 1", pages, got)
	}

	var page []wire.HistoryEntry
	if code := f.call(t, "GET", "/v1/history?before=3", "", "", &page); code != 200 || len(page) != 2 || page[0].ID != 2 {
		t.Fatalf("before=3: %d %+v", code, page)
	}
	if code := f.call(t, "GET", "/v1/history?before=1", "", "", &page); code != 200 || len(page) != 0 {
		t.Fatalf("before=1: %d %+v, want an empty page", code, page)
	}
	if code := f.call(t, "GET", "/v1/history?before=999&limit=2", "", "", &page); code != 200 || len(page) != 2 || page[0].ID != 12 {
		t.Fatalf("before beyond the newest: %d %+v", code, page)
	}
	for _, q := range []string{"before=0", "before=-1", "before=x", "before=99999999999999999999", "limit=1001", "limit=1e3"} {
		var out map[string]any
		if code := f.call(t, "GET", "/v1/history?"+q, "", "", &out); code != 400 {
			t.Errorf("?%s: %d %v, want 400", q, code, out)
		}
	}
}
