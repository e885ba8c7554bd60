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
	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/internal/hello"
	"github.com/baton-dev/baton/internal/live"
	"github.com/baton-dev/baton/upgrade"
	"github.com/sirupsen/logrus"
)

const serveUsage = `usage: webapp serve [--listen ADDR] [--listen-https ADDR] [--listen-grpc ADDR] [--listen-udp ADDR]
                    [--tls-cert FILE] [--tls-key FILE] [--shutdown-delay D] [--drain-timeout D]
                    [--stop-timeout D] [--idle-grace D] [--reload-timeout D] [--control PATH]
                    [--log-format text|json] [--log-level L] [--fd-store] [--fd-store-max N]
                    [--notify-reload] [--conn-handover=false]

Serves the sockets systemd passes by name (FileDescriptorName=), or binds
the --listen addresses without systemd:
  http   HTTP/1.1 and h2c (required)
  https  HTTPS, HTTP/2 and HTTP/1.1 by ALPN (optional)
  grpc   gRPC over h2c: grpc.health.v1.Health, reflection, webapp.v1.Ticker (optional)
  udp    answers every datagram with "<pid> " and the same bytes (optional)

The https certificate and key are the files tls.crt and tls.key that a
reload handed over, else tls_tls.crt and tls_tls.key in
$CREDENTIALS_DIRECTORY (LoadCredential=tls:/etc/webapp), else --tls-cert
and --tls-key. With none of them, webapp holds the https
socket without serving it and says so; a file that is unreadable, garbled
or not a pair stops the start.

GET /healthz is liveness (the process works); GET /readyz is readiness:
200 while serving, 503 from the moment SIGTERM arrives, while webapp
keeps serving for --shutdown-delay before it drains (set it behind a
health-checking load balancer or under Kubernetes; see man webapp).

flags:`

// serveConfig is the parsed command line of webapp serve.
type serveConfig struct {
	listen          string
	listenHTTPS     string
	listenGRPC      string
	listenUDP       string
	listenMetrics   string
	tlsCert         string
	tlsKey          string
	drainTimeout    time.Duration
	stopTimeout     time.Duration
	shutdownDelay   time.Duration
	idleGrace       time.Duration
	logFormat       string
	logLevel        string
	reloadTimeout   time.Duration
	control         string
	failHealthAfter time.Duration
	faultFile       string
	ignoreDrain     bool
	fdStore         bool
	fdStoreMax      int
	notifyReload    bool
	connHandover    bool
}

func parseServe(args []string, stdout io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	cl := newCommandLine("serve", serveUsage)
	fs := cl.fs
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "fallback `address` of the http socket (HTTP/1.1 and h2c) when systemd passes none (host:port, or a /path for a unix socket)")
	fs.StringVar(&c.listenHTTPS, "listen-https", "", "fallback `address` of the https socket (TLS: HTTP/2 and HTTP/1.1); empty: none")
	fs.StringVar(&c.listenGRPC, "listen-grpc", "", "fallback `address` of the grpc socket (gRPC over h2c); empty: none")
	fs.StringVar(&c.listenUDP, "listen-udp", "", "fallback `address` of the udp socket (host:port, or a /path for a unixgram socket); empty: none")
	fs.StringVar(&c.listenMetrics, "listen-metrics", "", "fallback `address` of the metrics socket (Prometheus /metrics and /debug/pprof/: keep it private); empty: none")
	fs.StringVar(&c.tlsCert, "tls-cert", defaultCertFile, "the https certificate `file` (PEM), when neither a reload nor $CREDENTIALS_DIRECTORY has it")
	fs.StringVar(&c.tlsKey, "tls-key", defaultKeyFile, "the https key `file` (PEM), read with the certificate")
	cl.duration(&c.drainTimeout, "drain-timeout", 20*time.Second, "on SIGTERM, cut connections still open after this `duration` (keep it below TimeoutStopSec=)")
	cl.duration(&c.stopTimeout, "stop-timeout", 0, "the unit's TimeoutStopSec= `duration`: a stop's drain ends a second before it (0: unknown, --drain-timeout alone bounds it)")
	cl.duration(&c.shutdownDelay, "shutdown-delay", 0, "on SIGTERM, answer /readyz with 503 but keep accepting and serving for this `duration` before the drain, so that load balancers take this instance out first (0: drain at once; keep it plus --drain-timeout below TimeoutStopSec= or terminationGracePeriodSeconds)")
	cl.duration(&c.idleGrace, "idle-grace", drain.DefaultIdleGrace, "keep answering kept-alive connections at least this `duration` into a drain before closing idle ones (a connection whose client sends requests further apart is kept for twice its gap, up to ten times this)")
	fs.BoolVar(&c.connHandover, "conn-handover", true, "at a reload, hand kept-alive plaintext HTTP/1.1 connections to the new generation instead of closing them, and at a stop with the fd store put them in the store for the next start (false: they drain and close)")
	cl.duration(&c.reloadTimeout, "reload-timeout", upgrade.DefaultTimeout, "on reload, give up on a new generation not ready within this `duration` (keep it below TimeoutStartSec=)")
	fs.StringVar(&c.control, "control", baton.ControlPath(), "unix socket `path` on which `webapp reload` reaches this service (default $RUNTIME_DIRECTORY/control.sock; none outside systemd)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: error, warn, info or debug")
	fs.BoolVar(&c.fdStore, "fd-store", false, "give the sockets bound here (no .socket unit) to systemd's file descriptor store, so that a restart gets them back and refuses nothing (needs FileDescriptorStoreMax=; automatic where systemd sets $FDSTORE, 254 and later)")
	fs.IntVar(&c.fdStoreMax, "fd-store-max", 0, "the unit's FileDescriptorStoreMax= `count`, for systemd 252 and 253, which do not pass it as $FDSTORE: with a known size a stop also keeps idle connections in the store for the next start (0: unknown)")
	fs.BoolVar(&c.notifyReload, "notify-reload", false, "the unit is Type=notify-reload (systemd 253 and later): SIGHUP from `systemctl reload` swaps the binary, and READY=1 with RELOADING=1 of the new generation ends the reload")
	if err := cl.parse(args, stdout); err != nil {
		return nil, err
	}
	if err := checkListen(c.listen); err != nil {
		return nil, cl.errorf("--listen %q: %v", c.listen, err)
	}
	seen := map[string]string{c.listen: "listen"}
	for _, l := range []struct{ flag, addr string }{{"listen-https", c.listenHTTPS}, {"listen-grpc", c.listenGRPC}, {"listen-udp", c.listenUDP}, {"listen-metrics", c.listenMetrics}} {
		if l.addr == "" {
			continue
		}
		if err := checkListen(l.addr); err != nil {
			return nil, cl.errorf("--%s %q: %v", l.flag, l.addr, err)
		}
		// Two stream sockets cannot share an address, nor a UDP socket a
		// path; port 0 is a new port each time.
		if other, ok := seen[l.addr]; ok && !strings.HasSuffix(l.addr, ":0") && (l.flag != "listen-udp" || strings.HasPrefix(l.addr, "/")) {
			return nil, cl.errorf("--%s %q: the same address as --%s", l.flag, l.addr, other)
		}
		if l.flag != "listen-udp" {
			seen[l.addr] = l.flag
		}
	}
	switch {
	case c.tlsCert == "":
		return nil, cl.errorf("--tls-cert: empty path")
	case c.tlsKey == "":
		return nil, cl.errorf("--tls-key: empty path")
	}
	switch {
	case c.drainTimeout <= 0:
		return nil, cl.errorf("--drain-timeout %v: must be positive", c.drainTimeout)
	case c.stopTimeout < 0:
		return nil, cl.errorf("--stop-timeout %v: must not be negative", c.stopTimeout)
	case c.shutdownDelay < 0:
		return nil, cl.errorf("--shutdown-delay %v: must not be negative", c.shutdownDelay)
	case c.idleGrace < 0:
		return nil, cl.errorf("--idle-grace %v: must not be negative", c.idleGrace)
	case c.fdStoreMax < 0:
		return nil, cl.errorf("--fd-store-max %d: must not be negative", c.fdStoreMax)
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
	// A contrast for tests: /ws and /events do not watch the drain, so a
	// drain waits for them until its deadline and cuts them.
	switch v := os.Getenv("WEBAPP_IGNORE_DRAIN"); v {
	case "":
	case "1":
		c.ignoreDrain = true
	default:
		return nil, &usageError{msg: fmt.Sprintf("WEBAPP_IGNORE_DRAIN=%q: want 1 or nothing", v)}
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

// listenSpec is a socket with its fallback address: a /path is a unix
// (or unixgram) socket. An empty address binds nothing.
func listenSpec(name, addr string, datagram bool) baton.Socket {
	s := baton.Socket{Name: name, Network: "tcp", Address: addr}
	switch {
	case datagram && strings.HasPrefix(addr, "/"):
		s.Network = "unixgram"
	case datagram:
		s.Network = "udp"
	case strings.HasPrefix(addr, "/"):
		s.Network = "unix"
	}
	return s
}

// serve is `webapp serve`: the handlers, wired to systemd by baton.Run.
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
	stderrFile, _ := stderr.(*os.File)
	ev := newEvents(log, stderrFile)
	met := newMetrics()
	ev.also = met.event
	version := webappVersion()
	var readiness baton.Readiness
	// The long-lived endpoints end cleanly when a drain begins (package
	// live); every other path is hello's.
	draining := live.Signal(baton.Draining)
	if cfg.ignoreDrain {
		draining = func(context.Context) <-chan struct{} { return nil }
	}
	helloHandler := routes(hello.New(version, cfg.failHealthAfter), &readiness,
		live.WebSocket(draining), live.Events(draining, live.DefaultInterval))
	newHTTPServer := func(handler http.Handler) *http.Server {
		return &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: hello.ReadHeaderTimeout,
			IdleTimeout:       hello.IdleTimeout,
			ErrorLog:          newStdLog(log),
		}
	}

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	plain := newHTTPServer(met.count("http", helloHandler))
	plain.Protocols = &protocols

	httpsSock := listenSpec("https", cfg.listenHTTPS, false)
	httpsSock.Optional = true
	// The certificate is read only when the https socket is there.
	https := baton.Defer(httpsSock, func() (*baton.Server, error) {
		cert, why, err := loadCertificate(cfg.tlsCert, cfg.tlsKey)
		switch {
		case err != nil:
			return nil, err
		case cert == nil:
			return baton.Hold(httpsSock, why), nil
		}
		what, warning := cert.describe(time.Now())
		log.Infof("https: %s", what)
		if warning != "" {
			log.Warnf("https: %s", warning)
		}
		srv := newHTTPServer(met.count("https", helloHandler))
		srv.TLSConfig = cert.tlsConfig()
		return baton.HTTP(httpsSock, srv), nil
	})

	rpc := newRPCServer()
	grpcSock := listenSpec("grpc", cfg.listenGRPC, false)
	grpcSock.Optional = true
	udpSock := listenSpec("udp", cfg.listenUDP, true)
	udpSock.Optional = true
	metricsSock := listenSpec("metrics", cfg.listenMetrics, false)
	metricsSock.Optional = true

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload, err := asInit(cfg, hup, log)
	if err != nil {
		return err
	}
	err = baton.Run(ctx, baton.Options{
		DrainTimeout:        cfg.drainTimeout,
		StopTimeout:         cfg.stopTimeout,
		ShutdownDelay:       cfg.shutdownDelay,
		Readiness:           &readiness,
		IdleGrace:           cfg.idleGrace,
		KeepConnectionsHere: !cfg.connHandover,
		ReloadTimeout:       cfg.reloadTimeout,
		Control:             cfg.control,
		Args:                append([]string{"serve"}, args...),
		Reload:              reload,
		HealthPath:          "/healthz",
		OnDrain:             rpc.drain,
		OnEvent:             ev.handle,
		Version:             version,
		Logger:              log,
		FDStore:             cfg.fdStore,
		FDStoreMax:          cfg.fdStoreMax,
		NotifyReload:        cfg.notifyReload,
		OnHandoverStep: func(s upgrade.Step) {
			log.Debugf("hand-over: %s", s)
			if cfg.faultFile != "" {
				pauseAt(cfg.faultFile, s, log)
			}
		},
	},
		baton.HTTP(listenSpec("http", cfg.listen, false), plain),
		https,
		baton.GRPC(grpcSock, rpc.Server),
		baton.Datagram(udpSock, hello.Echo()),
		baton.HTTP(metricsSock, newHTTPServer(met.handler())),
	)
	if errors.Is(err, drain.ErrCut) {
		// The stop (or the drain after a hand-over) ended at its
		// deadline, as designed: not a failure for systemd
		// (SuccessExitStatus=3), but not a clean exit either.
		log.Warnf("%v", err)
		return errCut
	}
	if err != nil {
		log.Errorf("%v", err)
		return errReported
	}
	return nil
}

// routes serves GET /readyz from the service's readiness (with webapp's
// headers), GET /ws and GET /events from the long-lived endpoints, and
// everything else from h (internal/hello, which stays the benchmarks'
// baseline).
//
// Comparisons of the path, not a ServeMux in front of hello's: every
// request passes here, and a mux's match costs a few percent of a
// request's time.
func routes(h http.Handler, r *baton.Readiness, ws, events http.Handler) http.Handler {
	ready := r.Handler()
	pid := strconv.Itoa(os.Getpid())
	version := webappVersion()
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			h.ServeHTTP(w, req)
			return
		}
		switch req.URL.Path {
		case "/readyz":
			w.Header().Set("X-Webapp-Pid", pid)
			w.Header().Set("X-Webapp-Version", version)
			ready.ServeHTTP(w, req)
		case "/ws":
			ws.ServeHTTP(w, req)
		case "/events":
			events.ServeHTTP(w, req)
		default:
			h.ServeHTTP(w, req)
		}
	})
}
