// Package hello is webapp's HTTP handler: GET / answers "hello world",
// GET /slow?ms=N answers after N ms (at most two minutes), GET /healthz
// answers "ok"; every response carries X-Webapp-Pid and X-Webapp-Version.
// The benchmark's comparison servers serve the same handler. Echo is
// webapp's datagram handler: it answers every datagram with the pid and
// the same bytes.
package hello

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// maxSlow bounds /slow?ms=N.
const maxSlow = 120 * time.Second

// Server timeouts webapp uses, for servers that want to match it.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 2 * time.Minute
)

// app is the handler.
type app struct {
	pid     string
	version string
	// unhealthyAt, when not zero, is when /healthz starts failing: a switch
	// for tests of the watchdog (WEBAPP_FAIL_HEALTH_AFTER).
	unhealthyAt time.Time
	mux         *http.ServeMux
}

// New returns the handler. version goes in X-Webapp-Version. When
// failHealthAfter is positive, /healthz fails from that long after New on:
// a switch for tests of the watchdog (WEBAPP_FAIL_HEALTH_AFTER).
func New(version string, failHealthAfter time.Duration) http.Handler {
	a := &app{pid: strconv.Itoa(os.Getpid()), version: version, mux: http.NewServeMux()}
	if failHealthAfter > 0 {
		a.unhealthyAt = time.Now().Add(failHealthAfter)
	}
	a.mux.HandleFunc("GET /{$}", a.hello)
	a.mux.HandleFunc("GET /slow", a.slow)
	a.mux.HandleFunc("GET /healthz", a.healthz)
	return a
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["X-Webapp-Pid"] = []string{a.pid}
	h["X-Webapp-Version"] = []string{a.version}
	a.mux.ServeHTTP(w, r)
}

func (a *app) hello(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = []string{"text/plain; charset=utf-8"}
	w.Write([]byte("hello world\n"))
}

func (a *app) slow(w http.ResponseWriter, r *http.Request) {
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

func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	if !a.unhealthyAt.IsZero() && time.Now().After(a.unhealthyAt) {
		http.Error(w, "unhealthy (WEBAPP_FAIL_HEALTH_AFTER)", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

// Echo returns webapp's datagram handler: every datagram is answered, to
// its sender, with "<pid> " followed by the same bytes.
func Echo() func(pc net.PacketConn, b []byte, from net.Addr) {
	prefix := strconv.Itoa(os.Getpid()) + " "
	return func(pc net.PacketConn, b []byte, from net.Addr) {
		reply := make([]byte, 0, len(prefix)+len(b))
		reply = append(append(reply, prefix...), b...)
		pc.WriteTo(reply, from) // a lost answer is a lost datagram: the sender asks again
	}
}
