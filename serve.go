package baton

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/upgrade"
)

// Defaults for the zero values of Options.
const (
	DefaultAddress      = "127.0.0.1:8080"
	DefaultName         = "http"
	DefaultDrainTimeout = 20 * time.Second
)

// Logger receives what Serve has to say. *logrus.Logger and *logrus.Entry
// satisfy it.
type Logger interface {
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
	Errorf(format string, args ...any)
}

// Options configures Serve. The zero value serves the systemd socket named
// "http", or 127.0.0.1:8080 without systemd.
type Options struct {
	// Listener names the socket of Serve's one server (FileDescriptorName=
	// of the .socket unit) and the address bound when systemd passes none.
	// Zero fields mean DefaultName, "tcp" and DefaultAddress. Run ignores
	// it: each Server names its own socket.
	Listener activation.Spec
	// DrainTimeout bounds a drain, on stop and after a hand-over; keep it
	// below TimeoutStopSec=, or set StopTimeout. Zero means
	// DefaultDrainTimeout. A stop whose connections are still leaving
	// near the deadline moves it on and tells systemd
	// (EXTEND_TIMEOUT_USEC=); one whose connections stay is cut there.
	DrainTimeout time.Duration
	// StopTimeout is the unit's TimeoutStopSec=, which systemd does not
	// pass to the service. When set, a stop's drain ends before it: at
	// StopTimeout less a second (less a fifth when that is shorter),
	// counted from the SIGTERM (so ShutdownDelay included), if that comes
	// before DrainTimeout. Zero means unknown.
	StopTimeout time.Duration
	// IdleGrace is drain.Options.IdleGrace: at a stop, and at a reload for
	// what does not go to the new generation, how long kept-alive
	// connections are at least kept for their clients' next request (it
	// adapts to each connection's pace, up to ten times as long).
	IdleGrace time.Duration
	// KeepConnectionsHere turns off the hand-over of connections at a
	// reload (and their storing at a stop: see FDStoreMax): by default the plaintext HTTP/1.1 connections of HTTP
	// servers go to the new generation (their descriptors pass over the
	// hand-over's channel) as soon as nothing of their next request has
	// been read here, and their clients never reconnect. With it set they
	// drain here as at a stop: "Connection: close" and the idle grace.
	// TLS, HTTP/2 and hijacked connections always drain here.
	KeepConnectionsHere bool
	// ShutdownDelay is how long a stop (the end of Run's context) keeps
	// accepting and serving, with Readiness not ready and a STATUS= line
	// saying so, before the drain begins: time for load balancers and
	// Kubernetes to stop sending new connections. Zero (the default)
	// drains at once, which is right under systemd alone: the socket
	// outlives the process. A hand-over is not delayed. Behind a
	// health-checking balancer, set at least its check interval times
	// its fall count, plus a margin; under Kubernetes, the time endpoint
	// removal takes to reach every node (a few seconds). ShutdownDelay
	// plus DrainTimeout must fit TimeoutStopSec= or
	// terminationGracePeriodSeconds. Negative is an error.
	ShutdownDelay time.Duration
	// Readiness, if set, is made ready when the servers serve and not
	// ready when a stop begins (see Readiness). Nil tracks none.
	Readiness *Readiness
	// ReloadTimeout bounds the start of a new generation; keep it below
	// TimeoutStartSec=. Zero means upgrade.DefaultTimeout.
	ReloadTimeout time.Duration
	// Control is the path of the control socket that `reload` commands use
	// (see ControlPath). Empty means ControlPath(): under systemd with
	// RuntimeDirectory= set, $RUNTIME_DIRECTORY/control.sock; otherwise no
	// control socket, and reloads come only through Reload.
	Control string
	// Path is the binary a reload starts, and Args its arguments. Empty
	// Path means the path this program was started from (os.Args[0],
	// made absolute: the install path, which a package upgrade replaces);
	// nil Args means os.Args[1:].
	Path string
	Args []string
	// Reload starts a binary swap for every value received: pass a channel
	// given to signal.Notify for SIGHUP. Nil means none.
	Reload <-chan os.Signal
	// HealthPath is requested from the first HTTP server through an
	// in-memory connection to prove the service healthy: before it takes
	// connections (and before a new generation takes over) and, with
	// WatchdogSec=, before every watchdog ping. A 2xx answer is healthy.
	// Empty means "/".
	HealthPath string
	// HealthCheck, if set, proves the service healthy instead of the
	// HealthPath request (for a service without an HTTP server, say). A
	// nil error is healthy. Without either, a service is healthy once its
	// servers are set up.
	HealthCheck func(context.Context) error
	// OnDrain, if set, is called once, in its own goroutine, when this
	// generation stops taking new work: at a stop, or when a new
	// generation has taken over. Tell long-lived exchanges that cannot
	// see Draining (gRPC streams) to finish there; HTTP handlers and
	// Stream handlers have Draining(ctx).
	OnDrain func()
	// OnEvent, if set, is called with each Event of the service: started,
	// ready, reloads and their outcome, drains and what they cut,
	// watchdog failures. It is called synchronously and must not block;
	// the Logger gets the same as a message. A place for structured logs
	// and metrics.
	OnEvent func(Event)
	// Version is shown in the status line.
	Version string
	// Logger receives progress and problems. Nil discards them.
	Logger Logger
	// FDStore gives the sockets Run binds itself (no .socket unit passed
	// them) to systemd's file descriptor store (FDSTORE=1, FDNAME=<socket
	// name>), so that the next start after `systemctl restart` gets them
	// back by name instead of binding again: the sockets stay open across
	// the restart, and connections wait in their backlog instead of being
	// refused. The unit needs FileDescriptorStoreMax=. systemd 254 and
	// later announce it with $FDSTORE, which turns the storing on by
	// itself; systemd 252 does not, hence this switch. With FDStore set,
	// Run also takes every socket passed to it as one from the store, and
	// a socket passed back on an address other than its Socket's Address
	// (the configured address changed before a restart) fails the start
	// after removing it from the store (FDSTOREREMOVE=1), so that the next
	// start (Restart=on-failure) binds the new address: do not set it for
	// sockets a .socket unit passes.
	//
	FDStore bool
	// FDStoreMax is the unit's FileDescriptorStoreMax=, for systemd 252
	// and 253, which do not pass it as $FDSTORE. Where the store's size is
	// known ($FDSTORE above 0, or FDStoreMax), a stop also puts every idle
	// connection that a reload would hand over (plaintext HTTP/1.1,
	// unless KeepConnectionsHere) in the store under
	// activation.ConnName(socket), as many as fit beside the sockets,
	// instead of closing it; the next start serves them on and removes
	// them from the store, so that their clients keep their TCP
	// connection across `systemctl restart`. What does not fit closes as
	// without the store. Without a known size no connection is stored:
	// systemd closes what does not fit, and those clients would lose
	// their request.
	FDStoreMax int
	// NotifyReload is for a unit with Type=notify-reload (systemd 253 and
	// later), whose `systemctl reload` sends SIGHUP (a value on Reload)
	// and waits for READY=1: see upgrade.Options.NotifyReload.
	NotifyReload bool
	// OnHandoverStep, if set, is called synchronously at each step of a
	// hand-over, in the old generation and in the new one (see
	// upgrade.Step): a place to log or trace it.
	OnHandoverStep func(upgrade.Step)
}

// ControlPath is the default control socket: $RUNTIME_DIRECTORY/control.sock
// when systemd set RUNTIME_DIRECTORY (RuntimeDirectory= in the unit), else
// "".
func ControlPath() string {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		// RuntimeDirectory= may list several, separated by colons.
		d, _, _ = strings.Cut(d, ":")
		return filepath.Join(d, "control.sock")
	}
	return ""
}

// Serve runs one HTTP server as a systemd service: Run with
// HTTP(opts.Listener, srv). See Run.
func Serve(ctx context.Context, srv *http.Server, opts Options) error {
	opts = withDefaults(opts)
	return Run(ctx, opts, HTTP(opts.Listener, srv))
}

func withDefaults(o Options) Options {
	if o.Listener.Name == "" {
		o.Listener.Name = DefaultName
	}
	if o.Listener.Address == "" {
		o.Listener.Address = DefaultAddress
	}
	if o.Listener.Network == "" {
		o.Listener.Network = "tcp"
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.ReloadTimeout == 0 {
		o.ReloadTimeout = upgrade.DefaultTimeout
	}
	if o.Control == "" {
		o.Control = ControlPath()
	}
	if o.Path == "" {
		o.Path = installPath()
	}
	if o.Args == nil && len(os.Args) > 1 {
		o.Args = os.Args[1:]
	}
	if o.HealthPath == "" {
		o.HealthPath = "/"
	}
	if o.Logger == nil {
		o.Logger = discard{}
	}
	return o
}

// installPath is the path this program was started from, made absolute:
// not /proc/self/exe, which names the file a package upgrade has replaced.
// "" when it cannot be found (New reports that at the first reload).
func installPath() string {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		lp, err := exec.LookPath(p)
		if err != nil {
			return ""
		}
		p = lp
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	return abs
}

type discard struct{}

func (discard) Infof(string, ...any)  {}
func (discard) Warnf(string, ...any)  {}
func (discard) Errorf(string, ...any) {}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func startWatchdog(ctx context.Context, n *systemd.Notifier, check func(context.Context) error, log Logger) {
	interval, err := systemd.WatchdogInterval()
	if errors.Is(err, systemd.ErrNoWatchdog) {
		return
	}
	if err != nil {
		log.Warnf("watchdog off: %v", err)
		return
	}
	log.Infof("watchdog: pinging every %v while healthy", interval/2)
	go n.RunWatchdog(ctx, systemd.WatchdogOptions{Interval: interval, Check: check, Logger: log})
}
