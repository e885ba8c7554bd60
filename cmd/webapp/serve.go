package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/internal/hello"
	"github.com/baton-dev/baton/upgrade"
	"github.com/sirupsen/logrus"
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
	faultFile       string
}

func parseServe(args []string, stdout io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	cl := newCommandLine("serve", "usage: webapp serve [--listen ADDR] [--drain-timeout D] [--idle-grace D] [--reload-timeout D] [--control PATH] [--log-format text|json] [--log-level L]")
	fs := cl.fs
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "fallback `address` of the http listener when systemd passes none (host:port, or a /path for a unix socket)")
	cl.duration(&c.drainTimeout, "drain-timeout", 20*time.Second, "on SIGTERM, cut connections still open after this `duration` (keep it below TimeoutStopSec=)")
	cl.duration(&c.idleGrace, "idle-grace", drain.DefaultIdleGrace, "keep answering kept-alive connections this `duration` into a drain before closing idle ones")
	cl.duration(&c.reloadTimeout, "reload-timeout", upgrade.DefaultTimeout, "on reload, give up on a new generation not ready within this `duration` (keep it below TimeoutStartSec=)")
	fs.StringVar(&c.control, "control", baton.ControlPath(), "unix socket `path` on which `webapp reload` reaches this service (default $RUNTIME_DIRECTORY/control.sock; none outside systemd)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: error, warn, info or debug")
	if err := cl.parse(args, stdout); err != nil {
		return nil, err
	}
	if err := checkListen(c.listen); err != nil {
		return nil, cl.errorf("--listen %q: %v", c.listen, err)
	}
	switch {
	case c.drainTimeout <= 0:
		return nil, cl.errorf("--drain-timeout %v: must be positive", c.drainTimeout)
	case c.idleGrace < 0:
		return nil, cl.errorf("--idle-grace %v: must not be negative", c.idleGrace)
	case c.reloadTimeout <= 0:
		return nil, cl.errorf("--reload-timeout %v: must be positive", c.reloadTimeout)
	case c.control != "" && !filepath.IsAbs(c.control):
		return nil, cl.errorf("--control %q: must be an absolute path", c.control)
	case c.idleGrace >= c.drainTimeout:
		return nil, cl.errorf("--idle-grace %v: must be shorter than --drain-timeout %v", c.idleGrace, c.drainTimeout)
	}
	if v := os.Getenv("WEBAPP_FAIL_HEALTH_AFTER"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, &usageError{msg: fmt.Sprintf("WEBAPP_FAIL_HEALTH_AFTER=%q: want a positive duration", v)}
		}
		c.failHealthAfter = d
	}
	if v := os.Getenv("WEBAPP_FAULT_FILE"); v != "" {
		if !filepath.IsAbs(v) {
			return nil, &usageError{msg: fmt.Sprintf("WEBAPP_FAULT_FILE=%q: want an absolute path", v)}
		}
		c.faultFile = v
	}
	return c, nil
}

// pauseAt is the hand-over's fault injection for tests: with
// WEBAPP_FAULT_FILE set, a generation that reaches the step named in that
// file takes the file away, writes its pid to FILE.held, and waits there
// until FILE.held is gone (a minute at most), so that a test can kill or
// stop either generation at exactly that point, then remove FILE.held to
// let the hand-over go on.
func pauseAt(path string, s upgrade.Step, log *logrus.Logger) {
	b, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(b)) != string(s) || os.Remove(path) != nil {
		return
	}
	held := path + ".held"
	if os.WriteFile(held+".new", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644) != nil || os.Rename(held+".new", held) != nil {
		return
	}
	log.Warnf("fault injection: pid %d pauses at hand-over step %s", os.Getpid(), s)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(held); err != nil {
			return
		}
	}
}

func listenSpec(addr string) activation.Spec {
	if strings.HasPrefix(addr, "/") {
		return activation.Spec{Name: "http", Network: "unix", Address: addr}
	}
	return activation.Spec{Name: "http", Network: "tcp", Address: addr}
}

// serve is `webapp serve`: the handler, wired to systemd by baton.Serve.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServe(args, stdout)
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
	srv := &http.Server{
		Handler:           hello.New(version, cfg.failHealthAfter),
		ReadHeaderTimeout: hello.ReadHeaderTimeout,
		IdleTimeout:       hello.IdleTimeout,
		ErrorLog:          newStdLog(log),
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	err = baton.Serve(ctx, srv, baton.Options{
		Listener:      listenSpec(cfg.listen),
		DrainTimeout:  cfg.drainTimeout,
		IdleGrace:     cfg.idleGrace,
		ReloadTimeout: cfg.reloadTimeout,
		Control:       cfg.control,
		Args:          append([]string{"serve"}, args...),
		Reload:        hup,
		HealthPath:    "/healthz",
		Version:       version,
		Logger:        log,
		OnHandoverStep: func(s upgrade.Step) {
			log.Debugf("hand-over: %s", s)
			if cfg.faultFile != "" {
				pauseAt(cfg.faultFile, s, log)
			}
		},
	})
	if err != nil {
		log.Errorf("%v", err)
		return errReported
	}
	return nil
}
