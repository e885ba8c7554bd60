package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ErrNoWatchdog is returned by WatchdogInterval when the watchdog is off
// for this process.
var ErrNoWatchdog = errors.New("systemd: watchdog not enabled")

// Logger receives the messages of background loops, which have no caller to
// return an error to. *logrus.Logger and *logrus.Entry satisfy it.
type Logger interface {
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
}

// WatchdogInterval returns the watchdog interval systemd expects pings
// within, from WATCHDOG_USEC. When WATCHDOG_PID is set it must name this
// process; a process started by the main process (a new generation during a
// reload) is handed WATCHDOG_USEC without WATCHDOG_PID. The variables are
// left in the environment.
func WatchdogInterval() (time.Duration, error) {
	return parseWatchdog(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
}

func parseWatchdog(usec, pid string, self int) (time.Duration, error) {
	if usec == "" {
		return 0, ErrNoWatchdog
	}
	if pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil || p <= 0 {
			return 0, fmt.Errorf("systemd: WATCHDOG_PID=%q: not a process id", pid)
		}
		if p != self {
			return 0, fmt.Errorf("%w: WATCHDOG_PID=%d names another process", ErrNoWatchdog, p)
		}
	}
	u, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || u <= 0 {
		return 0, fmt.Errorf("systemd: WATCHDOG_USEC=%q: not a positive number of microseconds", usec)
	}
	return time.Duration(u) * time.Microsecond, nil
}

// WatchdogOptions configures RunWatchdog.
type WatchdogOptions struct {
	// Interval is the watchdog interval (see WatchdogInterval). Pings are
	// sent every Interval/2. Required.
	Interval time.Duration
	// Check reports whether the service can still serve. Each call gets a
	// context that ends after Interval/4. A nil Check always passes.
	Check func(ctx context.Context) error
	// Logger receives a warning when the check starts failing and a note
	// when it recovers. Nil discards them.
	Logger Logger
}

// RunWatchdog pings the watchdog at half the interval for as long as
// opts.Check passes, until ctx ends. While the check fails it sends
// nothing, so systemd restarts the service once the interval has passed.
// It returns nil when ctx ends.
func (n *Notifier) RunWatchdog(ctx context.Context, opts WatchdogOptions) error {
	if opts.Interval <= 0 {
		return fmt.Errorf("systemd: watchdog interval %v: must be positive", opts.Interval)
	}
	period := opts.Interval / 2
	t := time.NewTicker(period)
	defer t.Stop()
	failing := false
	for {
		err := runCheck(ctx, opts.Check, opts.Interval/4)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			if !failing && opts.Logger != nil {
				opts.Logger.Warnf("watchdog: health check failed, not pinging: %v", err)
			}
			failing = true
		default:
			if failing && opts.Logger != nil {
				opts.Logger.Infof("watchdog: health check passes again")
			}
			failing = false
			if err := n.Notify(WatchdogPing); err != nil && opts.Logger != nil {
				opts.Logger.Warnf("watchdog: %v", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func runCheck(ctx context.Context, check func(context.Context) error, timeout time.Duration) error {
	if check == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return check(cctx)
}
