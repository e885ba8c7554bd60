package livetest_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/internal/live"
	"github.com/baton-dev/baton/internal/livetest"
)

// serveOn serves /ws and /events on ln through a new Drainer.
func serveOn(ln net.Listener) *drain.Drainer {
	mux := http.NewServeMux()
	mux.Handle("GET /ws", live.WebSocket(drain.Begun))
	mux.Handle("GET /events", live.Events(drain.Begun, 0))
	d := drain.New(drain.Options{})
	go d.Serve(&http.Server{Handler: mux}, ln)
	return d
}

// TestClientsAcrossHandOver: the Python clients against two servers on
// one listening socket, the first drained while the second accepts (a
// hand-over in one process): every WebSocket client is closed with 1001
// once and reconnects, nothing is lost, no event id is missing or
// repeated, and the drain ends with nothing cut.
func TestClientsAcrossHandOver(t *testing.T) {
	livetest.Require(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	old := serveOn(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := livetest.Start(ctx, livetest.Options{Port: ln.Addr().(*net.TCPAddr).Port, WS: 40, SSE: 10, PerProcess: 20, Settle: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSettled(time.Minute); err != nil {
		t.Fatal(err)
	}
	next := serveOn(ln2)
	rep, err := old.Shutdown(ctx)
	if err != nil || rep.Cut != 0 {
		t.Errorf("Shutdown() of the first server = %+v, %v; want nothing cut", rep, err)
	}
	time.Sleep(1500 * time.Millisecond)
	r, err := c.Stop(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tot := r.Totals()
	t.Log(tot)
	if tot.WS != 40 || tot.SSE != 10 {
		t.Fatalf("reports of %d WebSocket and %d SSE clients, want 40 and 10", tot.WS, tot.SSE)
	}
	if tot.Abnormal != 0 || tot.Lost != 0 || tot.Dup != 0 || tot.ConnectErrors != 0 || tot.Clean != 40 {
		t.Errorf("WebSocket: %v; want 40 clean closes and nothing abnormal, lost or repeated (%q)", tot, tot.Examples)
	}
	if tot.Missing != 0 || tot.Repeated != 0 || tot.SSEErrors != 0 || tot.Streams < 20 {
		t.Errorf("SSE: %v; want every client on two streams, no id missing or repeated", tot)
	}
	ctx2, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	next.Shutdown(ctx2)
}

// TestWaitSettled: once WaitSettled returns, the server holds every
// WebSocket connection (stubborn and slow ones included) as hijacked and
// every SSE stream as a request under way, at once, with no wait.
func TestWaitSettled(t *testing.T) {
	livetest.Require(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := serveOn(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ws, stubborn, slow, sse = 30, 2, 1, 5
	c, err := livetest.Start(ctx, livetest.Options{Port: ln.Addr().(*net.TCPAddr).Port, WS: ws, Stubborn: stubborn, Slow: slow, SSE: sse, PerProcess: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSettled(time.Minute); err != nil {
		t.Fatal(err)
	}
	if raw, in := d.Raw(), d.InFlight(); raw != ws+stubborn+slow || in != ws+stubborn+slow+sse {
		t.Errorf("once settled: Raw() = %d, InFlight() = %d; want %d hijacked and %d under way", raw, in, ws+stubborn+slow, ws+stubborn+slow+sse)
	}
	r, err := c.Stop(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tot := r.Totals()
	if tot.WS != ws || tot.SSE != sse || len(r.Stubborn) != stubborn+slow {
		t.Errorf("reports: %v and %d stubborn or slow; want %d, %d and %d", tot, len(r.Stubborn), ws, sse, stubborn+slow)
	}
	for _, s := range r.Stubborn {
		if !s.Connected || s.Error != "" {
			t.Errorf("stubborn or slow client: %+v, want connected, no error", s)
		}
	}
	ctx2, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	d.Shutdown(ctx2)
}
