package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// reply is the outcome of one request sent in the background.
type reply struct {
	status int
	body   string
	err    error
	took   time.Duration
	done   time.Time
}

// getAsync sends one request on a new connection in the background; the
// channel yields its outcome once.
func (s *service) getAsync(path string, timeout time.Duration) <-chan reply {
	return s.getAsyncFrom(path, timeout, nil)
}

// getInFlight is getAsync that returns once webapp has accepted the
// connection (it no longer waits in the socket's backlog).
func (s *service) getInFlight(t *testing.T, path string, timeout time.Duration) <-chan reply {
	t.Helper()
	dialed := make(chan int, 1)
	ch := s.getAsyncFrom(path, timeout, func(port int) { dialed <- port })
	if err := s.waitAccepted(context.Background(), 10*time.Second, "", <-dialed); err != nil {
		t.Fatal(err)
	}
	return ch
}

// getAsyncFrom is getAsync that calls dialed, if not nil, once with the
// connection's local port (0 if the dial failed).
func (s *service) getAsyncFrom(path string, timeout time.Duration, dialed func(port int)) <-chan reply {
	ch := make(chan reply, 1)
	go func() {
		tr := &http.Transport{DisableKeepAlives: true}
		if dialed != nil {
			r := &portReporter{dialed: dialed}
			defer r.done()
			tr.DialContext = r.dial
		}
		c := &http.Client{Timeout: timeout, Transport: tr}
		start := time.Now()
		resp, err := c.Get(s.url + path)
		var r reply
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			r.status, r.body = resp.StatusCode, string(b)
		}
		r.err, r.took, r.done = err, time.Since(start), time.Now()
		ch <- r
	}()
	return ch
}

// timedSystemctl runs systemctl in the box and returns how long it took.
func (s *service) timedSystemctl(t *testing.T, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	s.box.Systemctl(t, args...)
	return time.Since(start)
}

// waitFor polls cond every 50 ms until it holds or timeout passes; cond
// returns whether it holds and what it saw, which a timeout reports.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v still waiting for %s; last seen: %s", timeout, what, saw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killedBySystemd lists the journal lines in which systemd gave up on a
// stop: a stop timeout or a SIGKILL.
func killedBySystemd(journal string) []string {
	var bad []string
	for _, l := range strings.Split(journal, "\n") {
		if strings.Contains(l, "SIGKILL") || strings.Contains(l, "timed out") {
			bad = append(bad, l)
		}
	}
	return bad
}

// disrupt returns a load.Schedule Run func that runs systemctl verb unit
// inside the box.
func (s *service) disrupt(verb, unit string) func(ctx context.Context, i int) error {
	return func(ctx context.Context, i int) error {
		_, stderr, err := s.box.Exec(ctx, "systemctl", verb, unit)
		if err != nil {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr))
		}
		return nil
	}
}

// eventTable formats the per-disruption windows of res as a table.
func eventTable(res *load.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%3s %8s %9s %7s %9s %9s %9s\n", "#", "took", "requests", "failed", "p99", "max", "worst+")
	for _, e := range res.Events {
		w := e.Window
		fmt.Fprintf(&b, "%3d %8v %9d %7d %9v %9v %9v\n", e.Index, e.Duration.Round(time.Millisecond),
			w.Requests, w.Failed, w.P99.Round(10*time.Microsecond), w.Max.Round(10*time.Microsecond),
			w.WorstAdded.Round(10*time.Microsecond))
	}
	return b.String()
}

// worstAdded is the largest WorstAdded over res's events.
func worstAdded(res *load.Result) time.Duration {
	var m time.Duration
	for _, e := range res.Events {
		m = max(m, e.Window.WorstAdded)
	}
	return m
}
