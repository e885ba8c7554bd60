package systemd_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/systemd/notifytest"
)

func countPings(msgs []notifytest.Message, since time.Time) int {
	n := 0
	for _, m := range msgs {
		if m.Has("WATCHDOG=1") && !m.Time.Before(since) {
			n++
		}
	}
	return n
}

// TestWatchdogStopsWhenUnhealthy runs the loop against a real notify socket:
// pings come at half the interval while the check passes, stop while it
// fails, and resume when it passes again.
func TestWatchdogStopsWhenUnhealthy(t *testing.T) {
	sock := notifytest.Listen(t)
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var healthy atomic.Bool
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
				return errors.New("unhealthy")
			},
		})
	}()

	start := time.Now()
	time.Sleep(5 * interval)
	healthyPings := countPings(sock.Messages(), start)
	// At interval/2 there are about 10 pings in 5 intervals.
	if healthyPings < 6 {
		t.Errorf("healthy: %d pings in %v, want about 10", healthyPings, 5*interval)
	}

	healthy.Store(false)
	time.Sleep(interval) // let a ping already under way land
	failStart := time.Now()
	time.Sleep(3 * interval)
	if got := countPings(sock.Messages(), failStart); got != 0 {
		t.Errorf("unhealthy: %d pings, want 0", got)
	}

	healthy.Store(true)
	recover := time.Now()
	time.Sleep(3 * interval)
	if got := countPings(sock.Messages(), recover); got < 2 {
		t.Errorf("recovered: %d pings, want pings again", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunWatchdog() = %v after cancel, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

func TestWatchdogRejectsZeroInterval(t *testing.T) {
	var n *systemd.Notifier
	if err := n.RunWatchdog(context.Background(), systemd.WatchdogOptions{}); err == nil {
		t.Error("RunWatchdog(Interval: 0) = nil, want an error")
	}
}
