package baton_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/systemd/notifytest"
)

// readyMux serves "/" (hello) and "/readyz" from r.
func readyMux(r *baton.Readiness) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", hello)
	mux.Handle("/readyz", r.Handler())
	return mux
}

// fetch GETs url on a new connection: the status and body, or an error.
func fetch(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestReadinessZeroValue(t *testing.T) {
	var r baton.Readiness
	if r.Ready() {
		t.Error("Readiness{}.Ready() = true, want false until Run serves")
	}
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "starting\n" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Readiness{}.Handler() = %d %q (Cache-Control %q), want 503 \"starting\\n\" (no-store)", rec.Code, rec.Body, rec.Header().Get("Cache-Control"))
	}
}

// TestRunShutdownDelay: when the context ends, /readyz turns 503 while
// the server still accepts new connections and answers them, and says
// so in STATUS=; STOPPING=1 and the drain come only after the delay, and
// then the port is closed.
func TestRunShutdownDelay(t *testing.T) {
	notify := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", notify.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	addr := freeAddr(t)
	var r baton.Readiness
	const delay = 3 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{ShutdownDelay: delay, Readiness: &r},
			baton.HTTP(baton.Socket{Name: "http", Address: addr}, &http.Server{Handler: readyMux(&r)}))
	}()
	notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	if code, body, err := fetch("http://" + addr + "/readyz"); err != nil || code != 200 || body != "ready\n" {
		t.Fatalf("GET /readyz while serving = %d %q, %v; want 200 \"ready\\n\"", code, body, err)
	}
	if !r.Ready() {
		t.Error("Ready() = false while serving, want true")
	}

	from := len(notify.Messages())
	cancel()
	m, i := notify.WaitFor(t, from, "STATUS=stopping: not ready, still serving for 3s before the drain", 10*time.Second)
	if m.Has("STOPPING=1") {
		t.Errorf("the delay's status came with STOPPING=1: %v", m)
	}
	if r.Ready() {
		t.Error("Ready() = true once the stop began, want false")
	}
	// Within the delay: not ready, yet a new connection is still served.
	code, body, err := fetch("http://" + addr + "/readyz")
	if err != nil || code != http.StatusServiceUnavailable || body != "stopping\n" {
		t.Errorf("GET /readyz in the delay = %d %q, %v; want 503 \"stopping\\n\"", code, body, err)
	}
	if code, body, err := fetch("http://" + addr + "/"); err != nil || code != 200 || body != "hello\n" {
		t.Errorf("GET / in the delay = %d %q, %v; want 200 \"hello\\n\"", code, body, err)
	}
	// Those answers came before the drain began.
	for _, m := range notifyUntilMark(t, notify)[i:] {
		if m.Has("STOPPING=1") {
			t.Errorf("STOPPING=1 before the delay's requests were answered (%v): the delay did not hold the drain off", m)
		}
	}
	notify.WaitFor(t, i, "STOPPING=1", 10*time.Second)
	if err := waitRun(t, done); err != nil {
		t.Errorf("Run() = %v after the delay and drain, want nil", err)
	}
	refused(t, addr)
	if r.Ready() {
		t.Error("Ready() = true after Run returned, want false")
	}
}

// TestRunShutdownDelayZero: without a delay the stop drains at once (no
// delay status), and readiness still turns off.
func TestRunShutdownDelayZero(t *testing.T) {
	notify := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", notify.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	addr := freeAddr(t)
	var r baton.Readiness
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{Readiness: &r},
			baton.HTTP(baton.Socket{Name: "http", Address: addr}, &http.Server{Handler: readyMux(&r)}))
	}()
	_, i := notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	for _, m := range notify.Messages()[i:] {
		if st, _ := m.Get("STATUS"); strings.Contains(st, "still serving") {
			t.Errorf("STATUS=%q with no ShutdownDelay, want the drain at once", st)
		}
	}
	if r.Ready() {
		t.Error("Ready() = true after the stop, want false")
	}
	refused(t, addr)
}

func TestRunShutdownDelayNegative(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	addr := freeAddr(t)
	err := baton.Run(context.Background(), baton.Options{ShutdownDelay: -time.Second},
		baton.HTTP(baton.Socket{Name: "http", Address: addr}, &http.Server{Handler: http.HandlerFunc(hello)}))
	if err == nil || !strings.Contains(err.Error(), "ShutdownDelay -1s: must not be negative") {
		t.Errorf("Run(ShutdownDelay: -1s) = %v, want an error saying it must not be negative", err)
	}
	if !bindable(baton.Socket{Name: "http", Network: "tcp", Address: addr}) {
		t.Errorf("%s bound after a refused start", addr)
	}
}
