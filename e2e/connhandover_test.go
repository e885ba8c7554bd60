package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConnHandover: under the real systemd, 300 kept-alive connections
// idle at a `systemctl reload` go on afterwards on the same TCP
// connection (the client's own connection object, which a close would
// have ended), answered by the new main process without
// "Connection: close"; a request in flight at the reload is answered by
// the old generation, whose descriptors meanwhile drop to what it held
// before the clients came; the journal's drain-finished line counts the
// connections handed over.
func TestConnHandover(t *testing.T) {
	s := startService(t, serviceOptions{})
	s.get(t, "/")
	old := s.mainPID(t)
	base, _ := s.procStatus(t, old)
	const n = 300
	conns := make([]*rawConn, n)
	ports := make([]string, n)
	for i := range conns {
		conns[i] = s.dialRaw(t)
		resp, err := conns[i].get("/", 10*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if pid := resp.Header.Get("X-Webapp-Pid"); pid != old {
			t.Fatalf("connection %d answered by pid %s, want %s", i, pid, old)
		}
		ports[i] = conns[i].c.LocalAddr().String()
	}
	if fds, _ := s.procStatus(t, old); fds < base+n {
		t.Fatalf("pid %s holds %d descriptors with %d connections open, want at least %d", old, fds, n, base+n)
	}
	slow := s.getInFlight(t, "/slow?ms=4000", 20*time.Second)

	r := s.reload(context.Background())
	if r.Err != nil {
		t.Fatalf("systemctl reload: %v\n%s", r.Err, r.Output)
	}
	next := s.mainPID(t)
	if next == old {
		t.Fatalf("MainPID stayed %s after the reload", old)
	}
	// The old generation closes its copies as they go: wait for it, with
	// a bound, while the slow request keeps it there.
	var fds int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _, err := s.box.Exec(context.Background(), "sh", "-c", `ls /proc/$1/fd | wc -l`, "sh", old)
		if err != nil {
			t.Fatalf("pid %s gone with a 4 s request in flight: %v", old, err)
		}
		fmt.Sscan(strings.TrimSpace(out), &fds)
		if fds <= base+1 || time.Now().After(deadline) {
			break
		}
	}
	if fds > base+1 {
		t.Errorf("old generation (pid %s) holds %d descriptors after the hand-over, want at most %d (%d before the clients, and the request in flight)", old, fds, base+1, base)
	}

	outcome, firstErr := goOn(conns, ports, next)
	if firstErr != nil {
		t.Logf("first failure after the reload: %v", firstErr)
	}
	if outcome["went on"] != n || len(outcome) != 1 {
		t.Errorf("after the reload: %v, want all %d answered by pid %s on their connection", outcome, n, next)
	}
	if rep := <-slow; rep.err != nil || rep.status != 200 {
		t.Errorf("request in flight at the reload: %d %v", rep.status, rep.err)
	}
	line := s.waitJournal(t, 15*time.Second, "handed to the new generation")
	t.Logf("reload took %v; old generation's descriptors %d -> %d; after it: %v; journal: %s", r.Took.Round(time.Millisecond), base+n, fds, outcome, line)
}

// goOn sends GET / once more on each of conns, at once, and counts the
// outcomes: "went on" when the answer came on the same connection (the
// client port in ports) from pid without "Connection: close", else what
// happened instead ("failed", the first such error returned too).
func goOn(conns []*rawConn, ports []string, pid string) (map[string]int, error) {
	outcome := map[string]int{}
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.get("/", 10*time.Second)
			what := "went on"
			switch {
			case err != nil:
				what = "failed"
			case c.c.LocalAddr().String() != ports[i]:
				what = "another connection"
			case resp.Header.Get("X-Webapp-Pid") != pid:
				what = "answered by pid " + resp.Header.Get("X-Webapp-Pid")
			case resp.Close:
				what = "Connection: close"
			}
			mu.Lock()
			outcome[what]++
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return outcome, firstErr
}
