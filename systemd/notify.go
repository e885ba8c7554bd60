package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// ErrNotSupervised is returned by Open when NOTIFY_SOCKET is not set: the
// process does not run under a service manager that listens for
// notifications. It matches os.ErrNotExist.
var ErrNotSupervised = fmt.Errorf("systemd: NOTIFY_SOCKET not set: %w", os.ErrNotExist)

// ErrBarrierTimeout is returned by Barrier when the context ends before the
// service manager has confirmed the barrier.
var ErrBarrierTimeout = errors.New("systemd: barrier not confirmed")

// State is one or more NAME=value assignments of the notify protocol, one
// per line. Use the constants and constructors of this package rather than
// writing them by hand.
type State string

const (
	// Ready says start-up (or a reload) is finished: READY=1.
	Ready State = daemon.SdNotifyReady
	// Stopping says the service is shutting down: STOPPING=1.
	Stopping State = daemon.SdNotifyStopping
	// WatchdogPing resets the watchdog timer: WATCHDOG=1.
	WatchdogPing State = daemon.SdNotifyWatchdog
)

// Reloading says a reload has begun: RELOADING=1 with the MONOTONIC_USEC=
// timestamp that systemd 253 and later require with it. Send Ready when the
// reload is finished (or has failed).
func Reloading() State {
	s := daemon.SdNotifyReloading
	if ts := strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"); ts != "" {
		s += "\n" + ts
	}
	return State(s)
}

// Status is a one-line, human-readable state shown by systemctl status.
// Newlines in s are replaced by spaces.
func Status(s string) State {
	return State("STATUS=" + strings.ReplaceAll(s, "\n", " "))
}

// MainPID tells systemd which process is now the service's main process.
// With NotifyAccess=all the new process can send it itself.
func MainPID(pid int) State { return State("MAINPID=" + strconv.Itoa(pid)) }

// ExtendTimeout asks for d more time for the current start, stop or
// reload before systemd's timeout fires.
func ExtendTimeout(d time.Duration) State {
	return State("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// Notifier sends notifications to the service manager. It is safe for
// concurrent use. A nil *Notifier does nothing and returns nil from every
// method, so code can use one without checking whether it runs under
// systemd. From its first message on it keeps one datagram socket open,
// so that a process out of descriptors can still report its state.
type Notifier struct {
	addr string
	s    sender
}

// Open returns a Notifier for the socket named by NOTIFY_SOCKET. The
// variable is left in the environment. When it is unset, Open returns a nil
// Notifier and ErrNotSupervised.
func Open() (*Notifier, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil, ErrNotSupervised
	}
	return NewNotifier(addr)
}

// NewNotifier returns a Notifier for the given socket address: a file
// system path, or an abstract socket name starting with '@'.
func NewNotifier(addr string) (*Notifier, error) {
	if addr == "" || (addr[0] != '/' && addr[0] != '@') {
		return nil, fmt.Errorf("systemd: notify socket %q: want an absolute path or an abstract name starting with '@'", addr)
	}
	return &Notifier{addr: addr}, nil
}

// Addr returns the notify socket address, or "" for a nil Notifier.
func (n *Notifier) Addr() string {
	if n == nil {
		return ""
	}
	return n.addr
}

// Notify sends the states in one datagram.
func (n *Notifier) Notify(states ...State) error {
	if n == nil || len(states) == 0 {
		return nil
	}
	var b strings.Builder
	for i, s := range states {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(string(s))
	}
	if err := n.s.send(n.addr, []byte(b.String()), nil); err != nil {
		return fmt.Errorf("systemd: notify %s: %w", n.addr, err)
	}
	return nil
}

// Barrier waits until the service manager has processed every notification
// sent before it (BARRIER=1). The context bounds the wait; when it ends
// first, Barrier returns an error wrapping ErrBarrierTimeout.
func (n *Notifier) Barrier(ctx context.Context) error {
	if n == nil {
		return nil
	}
	if err := barrier(ctx, &n.s, n.addr); err != nil {
		return fmt.Errorf("systemd: barrier %s: %w", n.addr, err)
	}
	return nil
}
