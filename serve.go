package baton

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/drain"
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
	// Listener names the socket (FileDescriptorName= of the .socket unit)
	// and the address bound when systemd passes none. Zero fields mean
	// DefaultName, "tcp" and DefaultAddress.
	Listener activation.Spec
	// DrainTimeout bounds a drain, on stop and after a hand-over; keep it
	// below TimeoutStopSec=. Zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// IdleGrace is drain.Options.IdleGrace.
	IdleGrace time.Duration
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
	// HealthPath is requested through an in-memory connection to prove
	// the server healthy: before it takes connections (and before a new
	// generation takes over) and, with WatchdogSec=, before every watchdog
	// ping. A 2xx answer is healthy. Empty means "/".
	HealthPath string
	// Version is shown in the status line.
	Version string
	// Logger receives progress and problems. Nil discards them.
	Logger Logger
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

// Serve runs srv as a systemd service until ctx ends or a new generation
// has taken over, and then drains it. In order, it:
//
//   - takes its listener from systemd (socket activation), from the
//     previous generation (during a reload), or binds Listener.Address;
//   - proves the server healthy (HealthPath) before taking a connection;
//     a new generation then hands the commit to the old one (package
//     upgrade);
//   - sends READY=1 and a STATUS= line, and pings the watchdog while
//     healthy when WatchdogSec= is set;
//   - swaps in a new binary on every value from Reload and on every
//     request on the control socket (`webapp reload`);
//   - when ctx ends (the caller's SIGTERM), sends STOPPING=1 and drains
//     (package drain) within DrainTimeout; after a hand-over it drains
//     the same way without STOPPING=1.
//
// Serve returns nil after a clean drain, an error wrapping drain.ErrCut
// when the deadline cut connections, and other errors when the service
// could not start. It installs no signal handler and never exits the
// process. srv.Handler must not be changed while Serve runs.
func Serve(ctx context.Context, srv *http.Server, opts Options) error {
	opts = withDefaults(opts)
	log := opts.Logger
	notifier, err := systemd.Open()
	if err != nil && !errors.Is(err, systemd.ErrNotSupervised) {
		return err
	}
	// A previous generation that started us passes its sockets and a
	// handshake; otherwise this is a fresh start.
	handoff, err := upgrade.Inherited()
	if err != nil && !errors.Is(err, upgrade.ErrNotInherited) {
		return err
	}

	set, err := activation.Listen(ctx, opts.Listener)
	if err != nil {
		if handoff == nil {
			notifier.Notify(systemd.Status("start failed: " + err.Error()))
		}
		return err
	}
	defer set.Close()
	ln, err := set.Listener(opts.Listener.Name)
	if err != nil {
		return err
	}
	control := handoff.Control()
	if control == nil && opts.Control != "" {
		if control, err = upgrade.ListenControl(opts.Control); err != nil {
			return err
		}
	}
	d := drain.New(drain.Options{IdleGrace: opts.IdleGrace, Logger: log})
	upgrader, err := upgrade.New(upgrade.Options{
		Path:     opts.Path,
		Args:     opts.Args,
		Timeout:  opts.ReloadTimeout,
		Notifier: notifier,
		Logger:   log,
		OnCommit: d.StopAccepting,
		OnStep:   opts.OnHandoverStep,
	}, func(firstFD int) (upgrade.Handover, error) {
		files, env := set.Export(firstFD)
		if len(files) == 0 {
			return upgrade.Handover{}, errors.New("no listener left to hand on")
		}
		return upgrade.Handover{Files: files, Env: env}, nil
	})
	if err != nil {
		return err
	}

	step := func(s upgrade.Step) {
		if opts.OnHandoverStep != nil {
			opts.OnHandoverStep(s)
		}
	}
	probe := newProbe(opts.HealthPath)
	serveErr := make(chan error, 2)
	go func() { serveErr <- d.Serve(srv, probe) }()

	// Prove the server healthy before taking a single connection.
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = probe.Check(readyCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	if handoff != nil {
		// The old generation commits before we accept.
		step(upgrade.StepNewReady)
		hctx, cancel := context.WithTimeout(ctx, opts.ReloadTimeout+10*time.Second)
		err := handoff.Ready(hctx)
		cancel()
		if err != nil {
			return fmt.Errorf("not taking over: %w", err)
		}
	}
	go func() { serveErr <- d.Serve(srv, ln) }()
	if handoff != nil {
		// We accept beside the old generation until it has made us the
		// main process (MAINPID=).
		step(upgrade.StepNewAccepting)
		err := handoff.Accepting(ctx)
		switch {
		case errors.Is(err, upgrade.ErrOrphaned):
			log.Warnf("the old generation went away during the hand-over: taking over as the main process (%v)", err)
			if err := notifier.Notify(systemd.MainPID(os.Getpid())); err != nil {
				log.Warnf("notify: %v", err)
			}
		case err != nil:
			// What we accepted meanwhile is answered before we leave.
			if serr := stop(d, set, notifier, log, opts.DrainTimeout, false); serr != nil {
				return fmt.Errorf("not taking over: %w; %w", err, serr)
			}
			return fmt.Errorf("not taking over: %w", err)
		}
	}

	what := fmt.Sprintf("serving %s on %s (%s), pid %d", opts.Listener.Name, ln.Addr(), set.Source(), os.Getpid())
	if opts.Version != "" {
		what += ", version " + opts.Version
	}
	if err := notifier.Notify(systemd.Ready, systemd.Status(what)); err != nil {
		log.Warnf("notify: %v", err)
	}
	// Wait until systemd has taken READY=1 in, so that what follows (a
	// reload request, say) meets a service it knows is running.
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := notifier.Barrier(bctx); err != nil {
		log.Warnf("notify: %v", err)
	}
	cancel()
	log.Infof("%s", what)

	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	startWatchdog(wdCtx, notifier, probe, log)
	controlDone := make(chan struct{})
	if control != nil {
		go func() {
			defer close(controlDone)
			if err := upgrader.ServeControl(ctx, control); err != nil && !errors.Is(err, upgrade.ErrHandedOver) {
				log.Errorf("control socket: %v", err)
			}
		}()
	} else {
		close(controlDone)
	}
	// After a hand-over the reload command must hear the outcome before
	// this generation exits (the control socket closed at the commit).
	defer func() {
		select {
		case <-controlDone:
		case <-time.After(5 * time.Second):
		}
	}()

	for {
		select {
		case <-ctx.Done():
			stopWatchdog()
			// Handed over just now? Then the service is not stopping.
			return stop(d, set, notifier, log, opts.DrainTimeout, !isClosed(upgrader.HandedOver()))
		case err := <-serveErr:
			if !errors.Is(err, http.ErrServerClosed) {
				notifier.Notify(systemd.Status("failed: " + err.Error()))
				return fmt.Errorf("serve: %w", err)
			}
		case <-opts.Reload:
			log.Infof("swapping in %s", opts.Path)
			go upgrader.Upgrade(ctx) // it logs the outcome
		case <-upgrader.HandedOver():
			stopWatchdog()
			return stop(d, set, notifier, log, opts.DrainTimeout, false)
		}
	}
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

// stop drains this generation. stopping says whether the service is
// stopping (SIGTERM) rather than handing over to a new generation.
func stop(d *drain.Drainer, set *activation.Set, notifier *systemd.Notifier, log Logger, timeout time.Duration, stopping bool) error {
	status := func() systemd.State {
		return systemd.Status(fmt.Sprintf("draining: %d connections remain", d.Connections()))
	}
	if stopping {
		notifier.Notify(systemd.Stopping, status())
		log.Infof("stopping: draining %d connections (deadline %v)", d.Connections(), timeout)
	} else {
		log.Infof("handed over: draining %d connections (deadline %v)", d.Connections(), timeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if stopping {
					notifier.Notify(status())
				}
			}
		}
	}()
	// Our copies of the sockets close with the drain's listeners; the
	// files kept for handing on close here, so that without systemd the
	// socket is really closed and new clients are refused, not queued.
	set.Close()
	rep, err := d.Shutdown(ctx)
	close(done)
	if err != nil {
		if stopping {
			notifier.Notify(systemd.Status(fmt.Sprintf("stopped: %d connections cut at the %v deadline", rep.Cut, timeout)))
		}
		return fmt.Errorf("stopped after %v: %d connections cut at the deadline: %w", rep.Duration.Round(time.Millisecond), rep.Cut, err)
	}
	log.Infof("stopped after %v, no connection cut", rep.Duration.Round(time.Millisecond))
	return nil
}

func startWatchdog(ctx context.Context, n *systemd.Notifier, p *probe, log Logger) {
	interval, err := systemd.WatchdogInterval()
	if errors.Is(err, systemd.ErrNoWatchdog) {
		return
	}
	if err != nil {
		log.Warnf("watchdog off: %v", err)
		return
	}
	log.Infof("watchdog: pinging every %v while healthy", interval/2)
	go n.RunWatchdog(ctx, systemd.WatchdogOptions{Interval: interval, Check: p.Check, Logger: log})
}

var _ net.Listener = (*probe)(nil)
