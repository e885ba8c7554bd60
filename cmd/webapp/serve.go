package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/upgrade"
)

// serveConfig is the parsed command line of webapp serve.
type serveConfig struct {
	listen          string
	drainTimeout    time.Duration
	idleGrace       time.Duration
	logFormat       string
	logLevel        string
	reloadTimeout   time.Duration
	control         string
	failHealthAfter time.Duration
}

func parseServe(args []string, stderr io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("webapp serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "fallback `address` of the http listener when systemd passes none (host:port, or a /path for a unix socket)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 20*time.Second, "on SIGTERM, cut connections still open after this `duration` (keep it below TimeoutStopSec=)")
	fs.DurationVar(&c.idleGrace, "idle-grace", drain.DefaultIdleGrace, "keep answering kept-alive connections this `duration` into a drain before closing idle ones")
	fs.DurationVar(&c.reloadTimeout, "reload-timeout", upgrade.DefaultTimeout, "on reload, give up on a new generation not ready within this `duration` (keep it below TimeoutStartSec=)")
	fs.StringVar(&c.control, "control", defaultControl(), "unix socket `path` on which `webapp reload` reaches this service (default $RUNTIME_DIRECTORY/control.sock; none outside systemd)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: error, warn, info or debug")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: webapp serve [--listen ADDR] [--drain-timeout D] [--idle-grace D] [--reload-timeout D] [--control PATH] [--log-format text|json] [--log-level L]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, &usageError{fmt.Sprintf("serve: unexpected argument %q", fs.Arg(0))}
	}
	switch {
	case c.listen == "":
		return nil, &usageError{"--listen: empty address"}
	case c.drainTimeout <= 0:
		return nil, &usageError{fmt.Sprintf("--drain-timeout %v: must be positive", c.drainTimeout)}
	case c.idleGrace < 0:
		return nil, &usageError{fmt.Sprintf("--idle-grace %v: must not be negative", c.idleGrace)}
	case c.reloadTimeout <= 0:
		return nil, &usageError{fmt.Sprintf("--reload-timeout %v: must be positive", c.reloadTimeout)}
	case c.control != "" && !filepath.IsAbs(c.control):
		return nil, &usageError{fmt.Sprintf("--control %q: must be an absolute path", c.control)}
	case c.idleGrace >= c.drainTimeout:
		return nil, &usageError{fmt.Sprintf("--idle-grace %v: must be shorter than --drain-timeout %v", c.idleGrace, c.drainTimeout)}
	}
	if v := os.Getenv("WEBAPP_FAIL_HEALTH_AFTER"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, &usageError{fmt.Sprintf("WEBAPP_FAIL_HEALTH_AFTER=%q: want a positive duration", v)}
		}
		c.failHealthAfter = d
	}
	return c, nil
}

func listenSpec(addr string) activation.Spec {
	if strings.HasPrefix(addr, "/") {
		return activation.Spec{Name: "http", Network: "unix", Address: addr}
	}
	return activation.Spec{Name: "http", Network: "tcp", Address: addr}
}

// defaultControl is the control socket path under systemd (with
// RuntimeDirectory= set), or none.
func defaultControl() string {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		// RuntimeDirectory= may list several, separated by colons.
		d, _, _ = strings.Cut(d, ":")
		return filepath.Join(d, "control.sock")
	}
	return ""
}

// installPath is the path this program was started from, made absolute:
// the binary a reload starts. Not /proc/self/exe, which names the file a
// package upgrade has replaced.
func installPath() (string, error) {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		lp, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("cannot find the program's install path: %w", err)
		}
		p = lp
	}
	return filepath.Abs(p)
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseServe(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.logFormat, cfg.logLevel)
	if err != nil {
		return err
	}
	version := webappVersion()
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

	set, err := activation.Listen(ctx, listenSpec(cfg.listen))
	if err != nil {
		if handoff == nil {
			notifier.Notify(systemd.Status("start failed: " + err.Error()))
		}
		return err
	}
	defer set.Close()
	ln, err := set.Listener("http")
	if err != nil {
		return err
	}
	control := handoff.Control()
	if control == nil && cfg.control != "" {
		if control, err = upgrade.ListenControl(cfg.control); err != nil {
			return err
		}
	}
	path, err := installPath()
	if err != nil {
		return err
	}
	upgrader, err := upgrade.New(upgrade.Options{
		Path:     path,
		Args:     append([]string{"serve"}, args...),
		Timeout:  cfg.reloadTimeout,
		Notifier: notifier,
		Logger:   log,
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

	a := newApp(version, cfg.failHealthAfter)
	srv := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          newStdLog(log),
	}
	d := drain.New(drain.Options{IdleGrace: cfg.idleGrace, Logger: log})
	probe := newProbe()
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
		// The old generation commits (MAINPID=, READY=1) before we accept.
		hctx, cancel := context.WithTimeout(ctx, cfg.reloadTimeout+10*time.Second)
		err := handoff.Ready(hctx)
		cancel()
		if err != nil {
			log.Errorf("not taking over: %v", err)
			return errReported
		}
	}
	go func() { serveErr <- d.Serve(srv, ln) }()

	what := fmt.Sprintf("serving http on %s (%s), pid %d, version %s", ln.Addr(), set.Source(), os.Getpid(), version)
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
	if control != nil {
		go func() {
			if err := upgrader.ServeControl(ctx, control); err != nil && !errors.Is(err, upgrade.ErrHandedOver) {
				log.Errorf("control socket: %v", err)
			}
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	for {
		select {
		case <-ctx.Done():
			stopWatchdog()
			// Handed over just now? Then the service is not stopping.
			return stop(d, set, notifier, log, cfg.drainTimeout, !isClosed(upgrader.HandedOver()))
		case err := <-serveErr:
			if !errors.Is(err, http.ErrServerClosed) {
				log.Errorf("serve: %v", err)
				notifier.Notify(systemd.Status("failed: " + err.Error()))
				return errReported
			}
		case <-hup:
			log.Infof("SIGHUP: swapping in %s", path)
			go upgrader.Upgrade(ctx) // it logs the outcome
		case <-upgrader.HandedOver():
			stopWatchdog()
			return stop(d, set, notifier, log, cfg.drainTimeout, false)
		}
	}
}

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
func stop(d *drain.Drainer, set *activation.Set, notifier *systemd.Notifier, log *logrus.Logger, timeout time.Duration, stopping bool) error {
	status := func() systemd.State {
		return systemd.Status(fmt.Sprintf("draining: %d connections remain", d.Connections()))
	}
	if stopping {
		notifier.Notify(systemd.Stopping, status())
	}
	if stopping {
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
		notifier.Notify(systemd.Status(fmt.Sprintf("stopped: %d connections cut at the %v deadline", rep.Cut, timeout)))
		log.Errorf("stopped after %v: %d connections cut at the deadline", rep.Duration.Round(time.Millisecond), rep.Cut)
		return errReported
	}
	log.Infof("stopped after %v, no connection cut", rep.Duration.Round(time.Millisecond))
	return nil
}

func startWatchdog(ctx context.Context, n *systemd.Notifier, p *probe, log *logrus.Logger) {
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
