package baton

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/upgrade"
	"net"
	"syscall"
)

// Run runs the servers as one systemd service until ctx ends or a new
// generation has taken over, and then drains them together. In order, it:
//
//   - takes every server's socket by name from systemd (socket
//     activation), from the previous generation (during a reload), or
//     binds the Socket's fallback Address; a socket the unit does not
//     pass is an error unless it is Optional, and then its server does
//     not run;
//   - proves the service healthy (Options.HealthCheck, or HealthPath on
//     the first HTTP server) before taking a connection; a new generation
//     then hands the commit to the old one (package upgrade);
//   - sends one READY=1 and a STATUS= line naming every socket, and pings
//     the watchdog while healthy when WatchdogSec= is set;
//   - swaps in a new binary on every value from Options.Reload and on every
//     request on the control socket (`webapp reload`);
//   - when ctx ends (the caller's SIGTERM), turns Options.Readiness not
//     ready and keeps serving for Options.ShutdownDelay (zero by
//     default), then sends STOPPING=1 and drains every server within one
//     deadline (DrainTimeout, kept inside StopTimeout; moved on while
//     connections are still leaving, which systemd hears as
//     EXTEND_TIMEOUT_USEC=), with STATUS= counting what is left; after a
//     hand-over it drains the same way at once, within DrainTimeout,
//     without STOPPING=1, and leaves Readiness ready. Draining(ctx) is
//     closed as a drain begins, for the long-lived exchanges to end.
//
// Run returns nil after a clean drain, an error wrapping drain.ErrCut
// when the deadline cut connections, and other errors when the service
// could not start: a bad server, two servers on one socket name, a socket
// of the wrong kind, an unexpected or missing one. It starts nothing
// until all of them are right. It installs no signal handler and never
// exits the process.
func Run(ctx context.Context, opts Options, servers ...*Server) error {
	opts = withDefaults(opts)
	log := opts.Logger
	if err := checkServers(servers); err != nil {
		return err
	}
	if opts.ShutdownDelay < 0 {
		return fmt.Errorf("baton: ShutdownDelay %v: must not be negative (zero drains at once)", opts.ShutdownDelay)
	}
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
	specs := make([]activation.Spec, len(servers))
	for i, s := range servers {
		specs[i] = s.sock
	}
	set, err := activation.Listen(ctx, specs...)
	if err != nil {
		if handoff == nil {
			notifier.Notify(systemd.Status("start failed: " + err.Error()))
		}
		return err
	}
	defer set.Close()
	if err := checkStored(ctx, opts, notifier, set, specs); err != nil {
		notifier.Notify(systemd.Status("start failed: " + err.Error()))
		return err
	}
	storeBound(opts, notifier, set)

	lin := inheritedLineage(handoff != nil, opts.OnEvent, log)
	g := &group{opts: opts, set: set, lin: lin, received: make(chan struct{}), store: newConnStore(opts, notifier, set)}
	started := time.Now()
	var state atomic.Value // for Status: what Run is doing
	state.Store("starting")
	// Closed at a stop: the control socket refuses reloads from then on
	// but still answers status requests while the drain lasts.
	stopping := make(chan struct{})
	defer context.AfterFunc(ctx, func() { close(stopping) })()
	dopts := drain.Options{IdleGrace: opts.IdleGrace, Logger: log}
	for _, s := range servers {
		if !set.Has(s.sock.Name) {
			log.Infof("%s: no socket passed (optional): not serving it", s.sock.Name)
			continue
		}
		if k, ok := s.kind.(*deferKind); ok {
			b, err := k.built(s)
			if err != nil {
				if handoff == nil {
					notifier.Notify(systemd.Status("start failed: " + err.Error()))
				}
				return err
			}
			s = b
		}
		s.kind.setup(dopts)
		g.servers = append(g.servers, s)
		if h, ok := s.kind.(*holdKind); ok {
			log.Warnf("%s: holding the socket without serving it: %s", s.sock.Name, h.why)
		}
	}

	control := handoff.Control()
	if control == nil && opts.Control != "" {
		if control, err = upgrade.ListenControl(opts.Control); err != nil {
			return err
		}
	}
	upgrader, err := upgrade.New(upgrade.Options{
		Path:     opts.Path,
		Args:     opts.Args,
		Timeout:  opts.ReloadTimeout,
		Notifier: notifier,
		Logger:   log,
		Pause:    g.pause,
		Resume:   g.resume,
		OnCommit: g.stopAccepting,
		OnConns:  g.handOver,
		OnStep:   opts.OnHandoverStep,
		OnStart: func() {
			g.awaitReceived(min(opts.ReloadTimeout/2, 5*time.Second)) // within the reload command's wait: ReloadTimeout + 10 s
			lin.emit(Event{Kind: EventReloadStarted, Message: "upgrade: starting " + opts.Path})
		},
		OnOutcome: func(res upgrade.Result, err error) {
			if err != nil {
				lin.emit(Event{Kind: EventReloadFailed, Message: fmt.Sprintf("%v; still serving as pid %d", err, os.Getpid()), Duration: res.Duration, Err: err})
				return
			}
			lin.emit(Event{Kind: EventReloadCommitted, Message: fmt.Sprintf("upgrade: pid %d took over in %v", res.PID, res.Duration.Round(time.Millisecond)), NewPID: res.PID, Duration: res.Duration})
		},
		Status: func() string {
			b, err := json.Marshal(g.statusOf(started, &state))
			if err != nil {
				return "{}"
			}
			return string(b)
		},
		Stopping:     stopping,
		NotifyReload: opts.NotifyReload,
	}, func(firstFD int) (upgrade.Handover, error) {
		files, env := set.Export(firstFD)
		if len(files) == 0 {
			return upgrade.Handover{}, errors.New("no socket left to hand on")
		}
		return upgrade.Handover{Files: files, Env: append(env, lin.handoverEnv()...)}, nil
	})
	if err != nil {
		return err
	}

	step := func(s upgrade.Step) {
		if opts.OnHandoverStep != nil {
			opts.OnHandoverStep(s)
		}
	}
	// One value from each serving goroutine (and the probe's), so that
	// none is left blocked when Run returns.
	serveErr := make(chan error, 1+g.sockets())
	health := opts.HealthCheck
	if health == nil {
		health = func(context.Context) error { return nil }
		for _, s := range g.servers {
			if k, ok := s.kind.(*httpKind); ok {
				p := newProbe(opts.HealthPath)
				go func() { serveErr <- k.serve(p) }()
				health = p.Check
				break
			}
		}
	}

	lin.emit(Event{Kind: EventStarted, Message: fmt.Sprintf("started: generation %d, sockets from %s", lin.generation, set.Source())})
	// Prove the service healthy before taking a single connection.
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = health(readyCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	if handoff != nil {
		// The old generation commits (and stops reading its datagram
		// sockets) before we accept.
		step(upgrade.StepNewReady)
		hctx, cancel := context.WithTimeout(ctx, opts.ReloadTimeout+10*time.Second)
		err := handoff.Ready(hctx)
		cancel()
		if err != nil {
			return fmt.Errorf("not taking over: %w", err)
		}
	}
	g.serve(serveErr)
	g.adoptStored(notifier)
	// A new generation is ready from its first connection: the service
	// as a whole stays ready across a hand-over.
	opts.Readiness.set(readyServing)
	if handoff == nil {
		g.allReceived() // no old generation
	}
	if handoff != nil {
		// Connections the old generation passes on, if it can and we
		// have a server for them.
		takesConns := !opts.KeepConnectionsHere && g.adopts() && handoff.TakeConns() == nil
		// We accept beside the old generation until it has made us the
		// main process (MAINPID=).
		step(upgrade.StepNewAccepting)
		err := handoff.Accepting(ctx)
		if takesConns && (err == nil || errors.Is(err, upgrade.ErrOrphaned)) {
			go func() {
				defer g.allReceived()
				if err := handoff.ReceiveConns(g.adopt); err != nil {
					log.Warnf("connections from the old generation: %v", err)
				}
			}()
		} else {
			g.allReceived()
		}
		switch {
		case errors.Is(err, upgrade.ErrOrphaned):
			log.Warnf("the old generation went away during the hand-over: taking over as the main process (%v)", err)
			if err := notifier.Notify(systemd.MainPID(os.Getpid())); err != nil {
				log.Warnf("notify: %v", err)
			}
		case err != nil:
			// What we accepted meanwhile is answered before we leave.
			if serr := g.stop(notifier, false); serr != nil {
				return fmt.Errorf("not taking over: %w; %w", err, serr)
			}
			return fmt.Errorf("not taking over: %w", err)
		}
	}

	what := fmt.Sprintf("serving %s (%s), pid %d", g.describe(), set.Source(), os.Getpid())
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
	state.Store("serving")
	lin.emit(Event{Kind: EventReady, Message: what})

	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	startWatchdog(wdCtx, notifier, lin.watched(health), log)
	controlDone := make(chan struct{})
	// The control socket lasts until Run returns: during a stop's drain
	// it answers status requests (reloads are refused once stopping).
	controlCtx, endControl := context.WithCancel(context.Background())
	if control != nil {
		go func() {
			defer close(controlDone)
			if err := upgrader.ServeControl(controlCtx, control); err != nil && !errors.Is(err, upgrade.ErrHandedOver) {
				log.Errorf("control socket: %v", err)
			}
		}()
	} else {
		close(controlDone)
	}
	// After a hand-over the reload command must hear the outcome before
	// this generation exits (the control socket closed at the commit).
	defer func() {
		endControl()
		select {
		case <-controlDone:
		case <-time.After(5 * time.Second):
		}
	}()

	for {
		select {
		case <-ctx.Done():
			// Handed over just now? Then the service is not stopping.
			isStop := !isClosed(upgrader.HandedOver())
			if isStop {
				g.stopBegan = time.Now()
				state.Store("stopping")
				g.delayShutdown(notifier, serveErr)
			} else {
				state.Store("handed-over")
			}
			stopWatchdog()
			return g.stop(notifier, isStop)
		case err := <-serveErr:
			if err != nil {
				opts.Readiness.set(readyStopping)
				notifier.Notify(systemd.Status("failed: " + err.Error()))
				g.stop(notifier, true)
				return fmt.Errorf("serve: %w", err)
			}
		case <-opts.Reload:
			log.Infof("swapping in %s", opts.Path)
			go upgrader.Upgrade(ctx) // it logs the outcome
		case <-upgrader.HandedOver():
			stopWatchdog()
			state.Store("handed-over")
			return g.stop(notifier, false)
		}
	}
}

// checkServers says what is wrong with the servers, all of it, before
// anything is bound.
func checkServers(servers []*Server) error {
	if len(servers) == 0 {
		return errors.New("baton: no server to run")
	}
	var errs []error
	seen := map[string]bool{}
	for i, s := range servers {
		if s == nil || s.kind == nil {
			errs = append(errs, fmt.Errorf("baton: server %d is nil: make it with HTTP, GRPC, Stream, Datagram or Hold", i))
			continue
		}
		name := s.sock.Name
		if s.err != nil {
			errs = append(errs, fmt.Errorf("baton: socket %q: %w", name, s.err))
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("baton: socket %q: two servers for one socket name", name))
		}
		seen[name] = true
		if s.kind.datagram() != s.sock.Datagram() {
			if s.kind.datagram() {
				errs = append(errs, fmt.Errorf("baton: socket %q: a datagram server needs a datagram Network (udp, udp4, udp6 or unixgram), not %q", name, s.sock.Network))
			} else {
				errs = append(errs, fmt.Errorf("baton: socket %q: a stream server cannot serve datagram network %q (ListenDatagram=): use Datagram", name, s.sock.Network))
			}
		}
		if err := s.kind.check(); err != nil {
			errs = append(errs, fmt.Errorf("baton: socket %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// group is the servers of one generation, handled together.
type group struct {
	opts    Options
	set     *activation.Set
	servers []*Server
	lin     *lineage
	sender  *upgrade.ConnSender // to the new generation, after a hand-over
	store   *connStore          // where a stop puts connections; nil: nowhere
	// received is closed once the connections the old generation passes
	// on have all come (or none will): until then a drain of this
	// generation passes them on in turn, and its sender stays open.
	received     chan struct{}
	receivedOnce sync.Once

	drainOnce sync.Once
	stopBegan time.Time // when the stop began, before any shutdown delay
}

// serve starts every server on its sockets.
func (g *group) serve(errs chan<- error) {
	for _, s := range g.servers {
		if s.kind.datagram() {
			for _, pc := range g.set.PacketConns(s.sock.Name) {
				go func() { errs <- named(s, s.kind.serve(pc)) }()
			}
			continue
		}
		for _, ln := range g.set.Listeners(s.sock.Name) {
			go func() { errs <- named(s, s.kind.serve(ln)) }()
		}
	}
}

// sockets is how many sockets the servers serve.
func (g *group) sockets() int {
	n := 0
	for _, s := range g.servers {
		n += len(g.set.Listeners(s.sock.Name)) + len(g.set.PacketConns(s.sock.Name))
	}
	return n
}

func named(s *Server, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", s.sock.Name, err)
}

func (g *group) pause() {
	for _, s := range g.servers {
		s.kind.pause()
	}
}

func (g *group) resume() {
	for _, s := range g.servers {
		s.kind.resume()
	}
}

// awaitReceived waits, up to bound, until the connections the old
// generation passes on have all come: a reload that follows another at
// once starts when this generation serves them, instead of having them
// pass through it to the next one.
func (g *group) awaitReceived(bound time.Duration) {
	select {
	case <-g.received:
		return
	default:
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-g.received:
	case <-t.C:
		g.opts.Logger.Infof("connections from the old generation still arriving after %v: the new generation starts now, and they pass on to it", bound)
	}
}

// allReceived records that no more connections will come from the old
// generation.
func (g *group) allReceived() { g.receivedOnce.Do(func() { close(g.received) }) }

// adopts reports whether a server of the group takes connections a
// previous generation passes on.
func (g *group) adopts() bool {
	for _, s := range g.servers {
		if k, ok := s.kind.(connMover); ok && k.canMove() {
			return true
		}
	}
	return false
}

// adopt serves a connection the previous generation passed on, on the
// server of its socket.
func (g *group) adopt(name string, c net.Conn) {
	for _, s := range g.servers {
		if k, ok := s.kind.(connMover); ok && s.sock.Name == name {
			if err := k.adopt(c); err != nil {
				g.opts.Logger.Warnf("%s: a connection from the old generation: %v", name, err)
			}
			return
		}
	}
	c.Close()
	g.opts.Logger.Warnf("a connection from the old generation for socket %q, which no server here serves: closed", name)
}

// handOver arms, just before this generation stops accepting after a
// successful hand-over, the passing on of its connections to the new
// generation through s, which closes once the drain is over.
func (g *group) handOver(s *upgrade.ConnSender) {
	g.sender = s
	if g.opts.KeepConnectionsHere {
		return
	}
	for _, srv := range g.servers {
		if k, ok := srv.kind.(connMover); ok {
			name := srv.sock.Name
			k.handOver(func(c net.Conn) error {
				sc, ok := c.(syscall.Conn)
				if !ok {
					return fmt.Errorf("%T has no descriptor", c)
				}
				return s.Send(name, sc)
			})
		}
	}
}

// moved is how many connections went to the new generation.
func (g *group) moved() int {
	n := 0
	for _, s := range g.servers {
		if k, ok := s.kind.(connMover); ok {
			n += k.moved()
		}
	}
	return n
}

// stopAccepting stops every server taking new work, and says so to
// OnDrain once.
func (g *group) stopAccepting() {
	for _, s := range g.servers {
		s.kind.stopAccepting()
	}
	g.drainOnce.Do(func() {
		if g.opts.OnDrain != nil {
			go g.opts.OnDrain()
		}
	})
}

func (g *group) connections() int {
	n := 0
	for _, s := range g.servers {
		n += s.kind.connections()
	}
	return n
}

// longLived is how many of the connections are long-lived.
func (g *group) longLived() int {
	n := 0
	for _, s := range g.servers {
		n += s.kind.longLived()
	}
	return n
}

// drainTick is how often a drain looks at its connections: to report
// them (STATUS=), to see whether they are leaving, and to end at the
// deadline.
const drainTick = 250 * time.Millisecond

// stopMargin is how long before systemd's TimeoutStopSec= a stop's drain
// ends: a second, or a fifth of a shorter timeout.
func stopMargin(stopTimeout time.Duration) time.Duration {
	if stopTimeout > 0 && stopTimeout/5 < time.Second {
		return stopTimeout / 5
	}
	return time.Second
}

// drainContext is the context of a drain: it ends when the drain's
// watcher cancels it at the deadline, which a stop may move later.
// Deadline reports the first deadline, the one the servers plan by.
type drainContext struct {
	context.Context
	deadline time.Time
}

func (c drainContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c drainContext) Err() error {
	if c.Context.Err() != nil {
		return context.DeadlineExceeded
	}
	return nil
}

// describe names every socket served and its address.
func (g *group) describe() string {
	var parts []string
	for _, s := range g.servers {
		var addrs []string
		for _, ln := range g.set.Listeners(s.sock.Name) {
			addrs = append(addrs, ln.Addr().String())
		}
		for _, pc := range g.set.PacketConns(s.sock.Name) {
			addrs = append(addrs, pc.LocalAddr().String())
		}
		part := s.sock.Name + " on " + strings.Join(addrs, ", ")
		if _, ok := s.kind.(*holdKind); ok {
			part += " (held, not served)"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// delayShutdown turns readiness off and keeps serving for the
// ShutdownDelay, so that balancers stop sending new connections before
// the servers stop accepting. A server failing meanwhile ends the delay
// (its error is logged: the drain follows).
func (g *group) delayShutdown(notifier *systemd.Notifier, serveErr <-chan error) {
	g.opts.Readiness.set(readyStopping)
	d := g.opts.ShutdownDelay
	if d <= 0 {
		return
	}
	what := fmt.Sprintf("stopping: not ready, still serving for %v before the drain", d)
	notifier.Notify(systemd.Status(what))
	g.opts.Logger.Infof("%s", what)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return
		case err := <-serveErr:
			if err != nil {
				g.opts.Logger.Errorf("serve: %v: draining now", err)
				return
			}
		}
	}
}

// stop drains this generation: every server at once, within one
// deadline. stopping says whether the service is stopping (SIGTERM)
// rather than handing over to a new generation.
//
// A stop's deadline is DrainTimeout, or StopTimeout less a margin (and
// less the shutdown delay) when that is sooner. While connections are leaving, a stop near its deadline
// moves it on by a step, and each time the count goes down it tells
// systemd how long it still needs (EXTEND_TIMEOUT_USEC=, the time left
// plus the margin), so that systemd's own timeout never fires during a
// drain that makes progress. A drain that makes none is cut at its
// deadline, inside TimeoutStopSec=. STATUS= says what is left, live.
func (g *group) stop(notifier *systemd.Notifier, stopping bool) error {
	log, budget := g.opts.Logger, g.opts.DrainTimeout
	margin := stopMargin(g.opts.StopTimeout)
	if stopping && g.opts.StopTimeout > 0 {
		// The shutdown delay, if any, has used some of systemd's time.
		left := g.opts.StopTimeout - margin
		if !g.stopBegan.IsZero() {
			left -= time.Since(g.stopBegan)
		}
		budget = max(0, min(budget, left))
	}
	// A drain whose connections leave at least once a step goes on.
	step := max(2*time.Second, budget/4)
	status := func() systemd.State {
		return systemd.Status(fmt.Sprintf("draining: %d connections remain, %d long-lived (WebSocket, stream, gRPC)", g.connections(), g.longLived()))
	}
	open := g.connections()
	var msg string
	if stopping {
		notifier.Notify(systemd.Stopping, status())
		msg = fmt.Sprintf("stopping: draining %d connections, %d long-lived (deadline %v)", open, g.longLived(), budget)
	} else {
		msg = fmt.Sprintf("handed over: draining %d connections, %d long-lived (deadline %v)", open, g.longLived(), budget)
	}
	g.lin.emit(Event{Kind: EventDrainStarted, Message: msg, Connections: open, Stopping: stopping})
	start := time.Now()
	cctx, cancelCause := context.WithCancelCause(context.Background())
	cancel := func() { cancelCause(context.DeadlineExceeded) }
	defer cancel()
	ctx := drainContext{Context: cctx, deadline: start.Add(budget)}
	done := make(chan struct{})
	var final atomic.Int64 // the deadline, from the start
	final.Store(int64(budget))
	go func() {
		deadline := start.Add(budget)
		t := time.NewTicker(drainTick)
		defer t.Stop()
		end := time.NewTimer(budget)
		defer end.Stop()
		prev := g.connections()
		lastStatus := time.Now()
		for {
			select {
			case <-done:
				return
			case <-end.C:
				cancel()
				return
			case now := <-t.C:
				n := g.connections()
				progress := n < prev
				prev = n
				if stopping && progress && n > 0 {
					if deadline.Sub(now) < step {
						deadline = now.Add(step)
						end.Reset(step)
						final.Store(int64(deadline.Sub(start)))
						log.Infof("drain: %d connections still leaving: deadline moved to %v from the start", n, deadline.Sub(start).Round(time.Millisecond))
					}
					notifier.Notify(systemd.ExtendTimeout(deadline.Sub(now)+margin), status())
					lastStatus = now
				} else if stopping && now.Sub(lastStatus) >= time.Second {
					notifier.Notify(status())
					lastStatus = now
				}
			}
		}
	}()
	if stopping && g.sender == nil {
		g.armStore()
	}
	g.stopAccepting()
	// A datagram read just before is still being answered on its socket:
	// the sockets close once no handler needs them (or at the deadline).
	for _, s := range g.servers {
		s.kind.release(ctx)
	}
	// Our copies of the sockets close with the servers' listeners; the
	// files kept for handing on close here, so that without systemd the
	// socket is really closed and new clients are refused, not queued.
	g.set.Close()
	type result struct {
		s   *Server
		rep drain.Report
		err error
	}
	results := make(chan result, len(g.servers))
	for _, s := range g.servers {
		go func() {
			rep, err := s.kind.drain(ctx)
			results <- result{s, rep, err}
		}()
	}
	if g.sender != nil {
		// The new generation's receiving ends once nothing more can go
		// to it, not at the end of this drain: its own next reload waits
		// for that (awaitReceived), not for this drain's long-lived
		// connections.
		go func() {
			for _, s := range g.servers {
				if k, ok := s.kind.(connMover); ok && k.canMove() {
					select {
					case <-k.handedOver():
					case <-ctx.Done():
					}
				}
			}
			select {
			case <-g.received:
			case <-ctx.Done():
			}
			g.sender.Close()
		}()
	}
	cut := 0
	var errs []error
	var cuts []string
	for range g.servers {
		r := <-results
		if r.err != nil {
			cut += r.rep.Cut
			errs = append(errs, r.err)
			cuts = append(cuts, fmt.Sprintf("%s %d", r.s.sock.Name, r.rep.Cut))
		}
	}
	// Connections the old generation is still passing on go on to the
	// new one through the sender: it closes once they have all come. A
	// stop has no new generation: they are closed as they come, and the
	// stop does not wait for the old generation's drain.
	if g.sender != nil {
		select {
		case <-g.received:
		case <-ctx.Done():
		}
	}
	close(done)
	if g.sender != nil {
		g.sender.Close() // the new generation's receiving ends
	}
	if stopping && g.store != nil && g.store.stored.Load() > 0 {
		// systemd has the stored connections before this process exits.
		bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := notifier.Barrier(bctx); err != nil {
			log.Warnf("notify: %v", err)
		}
		cancel()
	}
	elapsed := time.Since(start)
	took := elapsed.Round(time.Millisecond)
	moved := g.moved()
	movedNote := ""
	switch {
	case moved > 0 && stopping:
		movedNote = fmt.Sprintf(", %d kept in systemd's file descriptor store for the next start", moved)
	case moved > 0:
		movedNote = fmt.Sprintf(", %d handed to the new generation", moved)
	}
	if len(errs) > 0 {
		if stopping {
			notifier.Notify(systemd.Status(fmt.Sprintf("stopped: %d connections cut at the %v deadline", cut, time.Duration(final.Load()).Round(time.Millisecond))))
		}
		err := fmt.Errorf("stopped after %v: %d connections cut at the deadline (%s)%s: %w", took, cut, strings.Join(cuts, ", "), movedNote, errors.Join(errs...))
		g.lin.emit(Event{Kind: EventDrainFinished, Message: err.Error(), Duration: elapsed, Cut: cut, Moved: moved, Stopping: stopping, Err: err})
		return err
	}
	g.lin.emit(Event{Kind: EventDrainFinished, Message: fmt.Sprintf("stopped after %v, no connection cut%s", took, movedNote), Duration: elapsed, Moved: moved, Stopping: stopping})
	return nil
}
