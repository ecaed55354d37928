// Package dashboard is vipswap's web page: slots and instances with their
// health and load, which slot each listener follows, a live chart of
// requests and errors per slot, the history, and buttons for swap,
// rollback, drain and ready. It is three static files embedded in the
// binary; the page reads and changes everything through the admin API, with
// the operator's token when one is needed, so it works offline and holds no
// data of its own.
package dashboard

import (
	"embed"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves the page at / and its script and style under /dashboard/.
func Handler() http.Handler {
	files := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		r2 := r.Clone(r.Context())
		switch r.URL.Path {
		case "/":
			r2.URL.Path = "/static/"
		default:
			r2.URL.Path = "/static/" + r.URL.Path[len("/dashboard/"):]
		}
		files.ServeHTTP(w, r2)
	})
}
