package systemd_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/systemd/notifytest"
)

// mark sends a datagram of its own to the notify socket and waits until
// it is received, returning its index. The socket's queue is in order, so
// every message sent before the mark has been received by then.
func mark(t *testing.T, sock *notifytest.Socket, from int, name string) int {
	t.Helper()
	c, err := net.Dial("unixgram", sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("TEST_MARK=" + name)); err != nil {
		t.Fatal(err)
	}
	_, i := sock.WaitFor(t, from, "TEST_MARK="+name, 10*time.Second)
	return i
}

// waitFor polls cond every 10 ms, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s still waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchdogStopsWhenUnhealthy runs the loop against a real notify socket:
// pings keep coming while the check passes, stop while it fails, and
// resume when it passes again. Checks are counted and the socket is
// marked, so that what is asserted does not depend on timing.
func TestWatchdogStopsWhenUnhealthy(t *testing.T) {
	sock := notifytest.Listen(t)
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var healthy atomic.Bool
	var failed atomic.Int64 // checks that failed
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	const interval = 200 * time.Millisecond
	go func() {
		done <- n.RunWatchdog(ctx, systemd.WatchdogOptions{
			Interval: interval,
			Check: func(context.Context) error {
				if healthy.Load() {
					return nil
				}
				failed.Add(1)
				return errors.New("unhealthy")
			},
		})
	}()

	// Healthy: pings, more than one.
	start := time.Now()
	_, i := sock.WaitFor(t, 0, "WATCHDOG=1", 10*time.Second)
	for range 3 {
		_, i = sock.WaitFor(t, i+1, "WATCHDOG=1", 10*time.Second)
	}
	t.Logf("healthy: 4 pings in %v at interval %v (one every interval/2 is about %v)", time.Since(start), interval, 3*interval/2)

	// Unhealthy: once a check has failed, every ping of a check that
	// passed before is in the socket before the first mark. Between it and
	// a mark three failed checks later there is no ping.
	healthy.Store(false)
	waitFor(t, "a failed check", func() bool { return failed.Load() >= 1 })
	from := mark(t, sock, i+1, "failing")
	seen := failed.Load()
	waitFor(t, "three more failed checks", func() bool { return failed.Load() >= seen+3 })
	to := mark(t, sock, from+1, "still-failing")
	if got := countPings(sock.Messages()[from:to]); got != 0 {
		t.Errorf("unhealthy: %d pings over %d failed checks, want 0", got, failed.Load()-seen)
	}

	// Recovered: pings again.
	healthy.Store(true)
	_, i = sock.WaitFor(t, to+1, "WATCHDOG=1", 10*time.Second)
	sock.WaitFor(t, i+1, "WATCHDOG=1", 10*time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunWatchdog() = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

func countPings(msgs []notifytest.Message) int {
	n := 0
	for _, m := range msgs {
		if m.Has("WATCHDOG=1") {
			n++
		}
	}
	return n
}

func TestWatchdogRejectsZeroInterval(t *testing.T) {
	var n *systemd.Notifier
	if err := n.RunWatchdog(context.Background(), systemd.WatchdogOptions{}); err == nil {
		t.Error("RunWatchdog(Interval: 0) = nil, want an error")
	}
}
