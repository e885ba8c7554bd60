// Package hello is the HTTP handler of the benchmark's comparison
// servers: the same routes, responses and identity headers as webapp's
// (GET / answers "hello world", GET /slow?ms=N sleeps N ms, GET /healthz
// answers "ok", every response carries X-Webapp-Pid and X-Webapp-Version),
// so that the load generator treats every server alike.
package hello

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

// maxSlow bounds /slow?ms=N, as in webapp.
const maxSlow = 120 * time.Second

// Server timeouts used by the comparison servers, the same as webapp's.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 2 * time.Minute
)

type handler struct {
	pid     string
	version string
	mux     *http.ServeMux
}

// Handler returns the handler; version is sent in X-Webapp-Version.
func Handler(version string) http.Handler {
	h := &handler{pid: strconv.Itoa(os.Getpid()), version: version, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", hello)
	h.mux.HandleFunc("GET /slow", slow)
	h.mux.HandleFunc("GET /healthz", healthz)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd["X-Webapp-Pid"] = []string{h.pid}
	hd["X-Webapp-Version"] = []string{h.version}
	h.mux.ServeHTTP(w, r)
}

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = []string{"text/plain; charset=utf-8"}
	w.Write([]byte("hello world\n"))
}

func slow(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 || time.Duration(ms)*time.Millisecond > maxSlow {
		http.Error(w, fmt.Sprintf("ms must be a whole number from 0 to %d", maxSlow.Milliseconds()), http.StatusBadRequest)
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	fmt.Fprintf(w, "slept %d ms\n", ms)
}

func healthz(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("ok\n"))
}
