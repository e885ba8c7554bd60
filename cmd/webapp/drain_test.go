package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// A 2 s request in flight at SIGTERM completes, and webapp exits 0 once
// it is answered, not at the drain deadline (20 s).
func TestSIGTERMWaitsForInFlightRequest(t *testing.T) {
	c := startWebapp(t, nil)
	cl := dial(t, c.addr)
	type answer struct {
		body  string
		close bool
		err   error
		at    time.Time
	}
	got := make(chan answer, 1)
	cl.inFlight(t, "/slow?ms=2000")
	go func() {
		resp, body, err := cl.read()
		a := answer{body: body, err: err, at: time.Now()}
		if resp != nil {
			a.close = resp.Close
		}
		got <- a
	}()
	c.signal(t, syscall.SIGTERM)
	code := c.wait(t, 15*time.Second)
	exited := time.Now()
	a := <-got
	if a.err != nil || a.body != "slept 2000 ms\n" {
		t.Fatalf("in-flight request: %q, %v; want it answered in full", a.body, a.err)
	}
	if !a.close {
		t.Error("in-flight response during drain lacks Connection: close")
	}
	if code != 0 {
		t.Errorf("webapp exit = %d, want 0", code)
	}
	if lag := exited.Sub(a.at); lag > 5*time.Second {
		t.Errorf("webapp exited %v after the in-flight request was answered, want soon after", lag)
	}
}

// 50 idle kept-alive connections do not hold the exit past the grace.
func TestSIGTERMWithIdleConnections(t *testing.T) {
	const grace = 500 * time.Millisecond
	c := startWebapp(t, nil, "--idle-grace", grace.String())
	for range 50 {
		cl := dial(t, c.addr)
		if _, _, err := cl.get("/"); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	c.signal(t, syscall.SIGTERM)
	code := c.wait(t, 15*time.Second)
	// At least the grace; well before the drain deadline (20 s), with room
	// for a loaded machine.
	if d := time.Since(start); d < grace || d > grace+5*time.Second {
		t.Errorf("exit %v after SIGTERM with 50 idle connections, want about the %v grace", d, grace)
	}
	if code != 0 {
		t.Errorf("webapp exit = %d, want 0", code)
	}
}

// A request longer than the drain deadline is cut at the deadline and the
// exit code says so.
func TestSIGTERMDeadlineCuts(t *testing.T) {
	c := startWebapp(t, nil, "--drain-timeout", "1s", "--idle-grace", "100ms")
	cl := dial(t, c.addr)
	cl.inFlight(t, "/slow?ms=10000")
	errc := make(chan error, 1)
	go func() {
		_, _, err := cl.read()
		errc <- err
	}()
	start := time.Now()
	c.signal(t, syscall.SIGTERM)
	code := c.wait(t, 15*time.Second)
	// At least the deadline; well before the request would end (10 s),
	// with room for a loaded machine.
	if d := time.Since(start); d < time.Second || d > 6*time.Second {
		t.Errorf("exit %v after SIGTERM, want about the 1s deadline", d)
	}
	if code != 3 {
		t.Errorf("webapp exit = %d, want 3 (connections were cut)", code)
	}
	if err := <-errc; err == nil {
		t.Error("the 10 s request was answered; want it cut at the deadline")
	}
	if !strings.Contains(c.stderr.String(), "1 connections cut") {
		t.Errorf("log does not say how many connections were cut:\n%s", c.stderr.String())
	}
}

// 32 clients looping requests on kept-alive connections while webapp gets
// SIGTERM: no request that was sent fails. Connections refused once the
// listener is closed are expected, since nothing else holds the socket.
func TestSIGTERMUnderKeepAliveLoad(t *testing.T) {
	c := startWebapp(t, nil)
	res, err := load.Run(context.Background(), "http://"+c.addr+"/", load.Options{
		Clients:  32,
		Mode:     load.KeepAlive,
		Duration: 4 * time.Second,
		Schedule: load.Schedule{
			Start: time.Second,
			Count: 1,
			Run: func(ctx context.Context, i int) error {
				return c.cmd.Process.Signal(syscall.SIGTERM)
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t, 10*time.Second); code != 0 {
		t.Errorf("webapp exit = %d, want 0", code)
	}
	t.Logf("%d requests, %d ok, failures %+v", res.Requests, res.OK, res.Failures)
	if res.OK < int64(res.Clients) {
		t.Errorf("only %d requests answered before SIGTERM, want a real load (%d clients for 1 s)", res.OK, res.Clients)
	}
	f := res.Failures
	if lost := f.Total() - f.Refused; lost != 0 {
		t.Errorf("%d sent requests failed (reset %d, eof %d, truncated %d, timeout %d, other %d), want 0; first: %+v",
			lost, f.Reset, f.EOF, f.Truncated, f.Timeout, f.Other, res.FailureDetails)
	}
}
