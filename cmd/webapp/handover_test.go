package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fdCount is how many descriptors process pid holds.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestSIGHUPHandsOverConnections is the connection hand-over without
// systemd: 300 kept-alive connections, idle at the SIGHUP, go on after it
// on the same TCP connection (the client's port is the one it had, and
// no answer says "Connection: close"), answered by the new generation;
// the old generation's descriptors drop to what it held before the
// clients came (it is kept alive by a request in flight, whose
// connection goes too once answered). The contrast turns the hand-over
// off (--conn-handover=false): then not one connection goes on.
func TestSIGHUPHandsOverConnections(t *testing.T) {
	for _, handover := range []bool{true, false} {
		t.Run(fmt.Sprintf("conn-handover=%v", handover), func(t *testing.T) {
			in := install(t, fmt.Sprintf("--conn-handover=%v", handover))
			old := in.mainPID(t)
			base := fdCount(t, old)
			const n = 300
			conns := make([]*conn, n)
			ports := make([]string, n)
			for i := range conns {
				conns[i] = dial(t, in.addr)
				resp, _, err := conns[i].get("/")
				if err != nil {
					t.Fatal(err)
				}
				if pid := resp.Header.Get("X-Webapp-Pid"); pid != strconv.Itoa(old) {
					t.Fatalf("answered by pid %s, want %d", pid, old)
				}
				ports[i] = conns[i].c.LocalAddr().String()
			}
			// Keeps the old generation there after the hand-over.
			slow := dial(t, in.addr)
			slow.inFlight(t, "/slow?ms=3000")
			if got := fdCount(t, old); got < base+n {
				t.Fatalf("old generation holds %d descriptors with %d connections open, want at least %d", got, n, base+n)
			}

			if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			next := old
			for deadline := time.Now().Add(15 * time.Second); next == old; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no new generation 15 s after SIGHUP")
				}
				next = in.mainPID(t)
			}
			if handover {
				// Our count is a snapshot of a process that is closing
				// descriptors: wait, with a bound, for it to get there.
				got := fdCount(t, old)
				for deadline := time.Now().Add(10 * time.Second); got > base+1 && time.Now().Before(deadline) && pidAlive(old); time.Sleep(20 * time.Millisecond) {
					got = fdCount(t, old)
				}
				if pidAlive(old) && got > base+1 {
					t.Errorf("old generation (pid %d) holds %d descriptors after the hand-over, want at most %d (%d before the clients, and the request in flight)", old, got, base+1, base)
				} else if !pidAlive(old) {
					t.Errorf("old generation exited with a 3 s request in flight")
				}
			}

			var mu sync.Mutex
			outcome := map[string]int{}
			var wg sync.WaitGroup
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.c.SetDeadline(time.Now().Add(10 * time.Second))
					resp, _, err := c.get("/")
					var what string
					switch {
					case err != nil:
						what = "failed (the connection was closed)"
					case c.c.LocalAddr().String() != ports[i]:
						what = "on another connection"
					case resp.Header.Get("X-Webapp-Pid") != strconv.Itoa(next):
						what = "answered by pid " + resp.Header.Get("X-Webapp-Pid")
					case resp.Close:
						what = "answered by the new generation with Connection: close"
					default:
						what = "went on"
					}
					mu.Lock()
					outcome[what]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			t.Logf("after the SIGHUP: %v", outcome)
			if handover && (outcome["went on"] != n || len(outcome) != 1) {
				t.Errorf("after the SIGHUP: %v, want all %d to go on, answered by pid %d", outcome, n, next)
			}
			if !handover && outcome["went on"] != 0 {
				t.Errorf("with --conn-handover=false: %v, want none to go on (they are closed after the idle grace)", outcome)
			}
			resp, body, err := slow.read()
			if err != nil || resp.Header.Get("X-Webapp-Pid") != strconv.Itoa(old) {
				t.Errorf("request in flight at the SIGHUP: %q, %v; want the old generation's answer", body, err)
			}
		})
	}
}
