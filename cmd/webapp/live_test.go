package main

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/livetest"
)

// TestLongLivedWithoutSystemd: webapp on its own bind, no systemd. 100
// WebSocket clients (Python websockets) and 20 SSE clients (http.client)
// through 3 SIGHUP swaps: every WebSocket is closed with 1001 at each swap
// and reconnects to the new generation, no message is lost, no event id
// is missing or repeated, and each old generation exits long before its
// 20 s deadline. Then SIGTERM with a client that ignores close frames,
// and a --stop-timeout of 3s: the others close cleanly, the stubborn
// one is cut at the deadline and counted (TestSIGTERMDeadlineCuts has
// the exit status).
func TestLongLivedWithoutSystemd(t *testing.T) {
	livetest.Require(t)
	in := install(t, "--stop-timeout=3s")
	_, p, _ := net.SplitHostPort(in.addr)
	port, _ := strconv.Atoi(p)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	clients, err := livetest.Start(ctx, livetest.Options{Port: port, WS: 100, SSE: 20, PerProcess: 50})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	var gens []livetest.Generation
	var oldExit []time.Duration
	for i := range 3 {
		old := in.mainPID(t)
		if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var next int
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if next = in.mainPID(t); next != old {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("SIGHUP %d: no new generation after 20s", i)
			}
		}
		swapped := time.Now()
		gens = append(gens, livetest.Generation{PID: strconv.Itoa(next), At: swapped})
		for pidAlive(old) && time.Since(swapped) < 15*time.Second {
			time.Sleep(10 * time.Millisecond)
		}
		oldExit = append(oldExit, time.Since(swapped))
		if pidAlive(old) {
			t.Errorf("SIGHUP %d: old generation %d still running 15 s after the swap (its long-lived connections hold it)", i, old)
		}
		time.Sleep(1500 * time.Millisecond)
	}
	res, err := clients.Stop(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tot := res.Totals()
	lat, never := res.Reconnects(gens)
	t.Logf("%v", tot)
	t.Logf("old generations exited %v after each swap; reconnect to the new pid: median %v, max %v", oldExit, livetest.Quantile(lat, 0.5), livetest.Quantile(lat, 1))
	if tot.WS != 100 || tot.SSE != 20 {
		t.Fatalf("reports of %d WebSocket and %d SSE clients, want 100 and 20", tot.WS, tot.SSE)
	}
	if tot.Abnormal != 0 || tot.Lost != 0 || tot.Dup != 0 || tot.ConnectErrors != 0 {
		t.Errorf("WebSocket: %v, want no abnormal close, loss, duplicate or connect error (%q)", tot, tot.Examples)
	}
	if tot.Clean != 3*100 {
		t.Errorf("%d clean closes (1001), want one per client per swap: 300", tot.Clean)
	}
	if never != 0 {
		t.Errorf("%d (client, generation) pairs never connected, want every client on every new generation", never)
	}
	if tot.Missing != 0 || tot.Repeated != 0 || tot.SSEErrors != 0 || tot.Streams < 20*4 {
		t.Errorf("SSE: %v, want no id missing or repeated, every client on 4 streams", tot)
	}

	// The stop, with a client that ignores close frames.
	clients, err = livetest.Start(ctx, livetest.Options{Port: port, WS: 50, Stubborn: 1, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	last := in.mainPID(t)
	start := time.Now()
	syscall.Kill(last, syscall.SIGTERM)
	for pidAlive(last) && time.Since(start) < 20*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	if pidAlive(last) {
		t.Fatalf("webapp %d still running 20 s after SIGTERM", last)
	}
	res, err = clients.Stop(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tot = res.Totals()
	t.Logf("stop took %v; %v; stubborn: %+v", took, tot, res.Stubborn)
	// A client that does not reconnect keeps what it sent as the close
	// frame crossed it unechoed (it would resend it on its next
	// connection): only its last messages, never one older than an echo.
	if tot.Clean != 50 || tot.Abnormal != 0 || tot.LostBeforeEcho != 0 {
		t.Errorf("at the stop: %v (%d unechoed older than an echo), want 50 clean closes, none abnormal, only the last messages of a client unechoed", tot, tot.LostBeforeEcho)
	}
	if len(res.Stubborn) != 1 || !res.Stubborn[0].Connected || !res.Stubborn[0].Cut || res.Stubborn[0].CloseFrames == 0 {
		t.Errorf("stubborn client: %+v, want connected, sent a close frame, then cut", res.Stubborn)
	}
	// Cut at the deadline: --stop-timeout 3s less its margin (0.6 s).
	if took < 2*time.Second || took > 10*time.Second {
		t.Errorf("the stop took %v, want about the 2.4 s deadline", took)
	}
	log := in.stderr.String()
	if !regexp.MustCompile(`stopped after [^:]+: 1 connections cut at the deadline`).MatchString(log) {
		t.Errorf("log does not count the stubborn connection as cut:\n%s", log)
	}
}
