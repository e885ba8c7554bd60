package drain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleGrace is the grace used when Options.IdleGrace is zero.
const DefaultIdleGrace = time.Second

// ErrCut is wrapped by the error Shutdown returns when connections with
// work under way were closed: at the deadline (the error then wraps the
// context's too), or earlier by net/http's Shutdown, which takes some of
// them for idle (see the package documentation).
var ErrCut = errors.New("drain: connections cut at the deadline")

// Logger receives messages of the drain. *logrus.Logger and *logrus.Entry
// satisfy it.
type Logger interface {
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
}

// Options configures a Drainer. The zero value is ready to use.
type Options struct {
	// IdleGrace is how long servers keep answering on kept-alive
	// connections after the drain begins, before idle connections are
	// closed. Zero means DefaultIdleGrace; a negative value means none.
	IdleGrace time.Duration
	// Logger receives progress messages. Nil discards them.
	Logger Logger
}

// Report says what a Shutdown did.
type Report struct {
	// Duration is the time from the start of Shutdown to its return.
	Duration time.Duration
	// Cut is how many connections with work under way were closed by
	// force: a request being read (its first byte received) or answered,
	// answers the client does not read, raw and hijacked connections. Most
	// are closed at the deadline; net/http's Shutdown closes some earlier,
	// taking them for idle, and they count too. See the package
	// documentation for how a connection is classed.
	Cut int
	// Idle is how many connections without work under way were closed at
	// the deadline: new connections that had not sent a byte, and
	// kept-alive connections waiting for their next request. They are not
	// in Cut and alone do not make Shutdown return an error.
	Idle int
}

// Drainer tracks the connections of the servers and listeners it was
// given, and shuts them down in order. Use New to make one.
type Drainer struct {
	opts     Options
	draining atomic.Bool
	shutdown atomic.Bool

	mu        sync.Mutex
	servers   map[*http.Server]struct{}
	listeners map[*listener]struct{}
	conns     map[net.Conn]*connMark // connections of the servers
	h2        int                    // how many of them speak HTTP/2
	raw       map[*conn]struct{}     // raw and hijacked connections
	serving   int                    // Serve calls that have not returned
	onDrain   []func()
	begun     chan struct{}        // closed when the drain begins
	handed    chan struct{}        // closed when Shutdown's wait for the hand-over ends
	cancels   []context.CancelFunc // of NewContext's contexts
	changed   chan struct{}        // closed and replaced when a connection goes

	mover   atomic.Pointer[mover] // the hand-over, once armed
	moves   atomic.Int64          // connections handed over
	moveErr error                 // why the hand-over stopped, if it did
	adopt   map[*http.Server]*adoptListener
}

// New returns a Drainer.
func New(opts Options) *Drainer {
	return &Drainer{
		opts:      opts,
		servers:   make(map[*http.Server]struct{}),
		listeners: make(map[*listener]struct{}),
		conns:     make(map[net.Conn]*connMark),
		raw:       make(map[*conn]struct{}),
		begun:     make(chan struct{}),
		handed:    make(chan struct{}),
		changed:   make(chan struct{}),
	}
}

// Begun returns a channel that is closed when the drain begins
// (StopAccepting or Shutdown): the moment a long-lived exchange (a
// WebSocket, a server-sent event stream, a raw connection) should finish
// what it has under way and end, so that its client resumes on the next
// generation. Handlers reach it through Begun(r.Context()).
func (d *Drainer) Begun() <-chan struct{} { return d.begun }

// NewContext returns a context derived from ctx that ends when the drain
// begins (or ctx ends) and carries d's drain signal, so that Begun finds
// it: the context of a raw connection's handler. It has ended by the
// time Begun's channel is closed. Requests of a server given to Serve
// carry the signal already (their context ends only with the request).
func (d *Drainer) NewContext(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(context.WithValue(ctx, begunKey{}, d.begun))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.draining.Load() {
		cancel()
	} else {
		d.cancels = append(d.cancels, cancel)
	}
	return ctx
}

// begunKey is the context key of a Drainer's Begun channel.
type begunKey struct{}

// Begun returns the drain signal carried by ctx: the channel of the
// Drainer serving the request whose context ctx is (or derives from), or
// of the one that made ctx with NewContext. It is closed when that drain
// begins. For any other ctx it returns nil, a channel that never closes,
// so a handler that selects on it works the same outside a Drainer.
func Begun(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(begunKey{}).(chan struct{})
	return ch
}

// HandedOver is closed once Shutdown has seen every connection that
// could go to HandOver's move go (or its deadline came), or at once in
// Shutdown without a hand-over armed: from then on move is called only
// for connections given to Adopt while draining.
func (d *Drainer) HandedOver() <-chan struct{} { return d.handed }

// Draining reports whether Shutdown has begun.
func (d *Drainer) Draining() bool { return d.draining.Load() }

// Connections returns how many connections are open: those of the servers
// (idle ones included) and the raw and hijacked ones.
func (d *Drainer) Connections() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns) + len(d.raw)
}

// Raw returns how many raw and hijacked connections (WebSockets, say) are
// open: the long-lived ones among Connections.
func (d *Drainer) Raw() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.raw)
}

// InFlight returns how many connections may have work under way: server
// connections not idle between requests (new ones included, whether or
// not they have sent a byte), and raw and hijacked ones.
func (d *Drainer) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inFlightLocked()
}

func (d *Drainer) inFlightLocked() int {
	n := len(d.raw)
	for _, m := range d.conns {
		if m.state() != http.StateIdle {
			n++
		}
	}
	return n
}

// OnDrain registers f to be called, in its own goroutine, when the drain
// begins (StopAccepting or Shutdown): a place to tell long-lived
// connections (streams, websockets) to finish. Begun is the same signal as
// a channel.
func (d *Drainer) OnDrain(f func()) {
	d.mu.Lock()
	d.onDrain = append(d.onDrain, f)
	d.mu.Unlock()
}

// Serve serves srv on ln until Shutdown, and then returns
// http.ErrServerClosed. The first call for a server wraps srv.Handler
// (nil means http.DefaultServeMux) so that responses carry
// "Connection: close" while draining, and installs a srv.ConnState hook
// that calls any hook already set; do not change either afterwards. A
// server may be served on several listeners. Temporary accept errors
// (too many open files, out of buffers or memory) are retried inside
// with a backoff and logged once per burst, so srv never sees them.
func (d *Drainer) Serve(srv *http.Server, ln net.Listener) error {
	return d.serve(srv, ln, false)
}

// ServeTLS is Serve over TLS: srv.ServeTLS with srv.TLSConfig, which must
// hold the certificates (Certificates, GetCertificate or
// GetConfigForClient). HTTP/2 is offered by ALPN as srv.Protocols says
// (by default "h2" and "http/1.1").
func (d *Drainer) ServeTLS(srv *http.Server, ln net.Listener) error {
	return d.serve(srv, ln, true)
}

// ServeProbe is Serve for the service's own checks of srv: a health
// probe that sends requests through an in-memory listener, so that they
// pass through srv's accept loop and handler like a client's. Its
// connections are not the service's clients: Connections, InFlight and
// Raw leave them out, and a drain neither waits for them nor closes
// them (the probe ends its own). Shutdown closes ln like the others.
func (d *Drainer) ServeProbe(srv *http.Server, ln net.Listener) error {
	wl, err := d.register(srv, ln, false)
	if err != nil {
		return err
	}
	wl.probe = true
	return d.serveOn(srv, wl, false)
}

func (d *Drainer) serve(srv *http.Server, ln net.Listener, tls bool) error {
	wl, err := d.register(srv, ln, !tls)
	if err != nil {
		return err
	}
	return d.serveOn(srv, wl, tls)
}

func (d *Drainer) serveOn(srv *http.Server, wl *listener, tls bool) error {
	var err error
	defer func() {
		d.mu.Lock()
		d.serving--
		d.signalLocked()
		d.mu.Unlock()
	}()
	if tls {
		err = srv.ServeTLS(wl, "", "")
	} else {
		err = srv.Serve(wl)
	}
	if d.Draining() {
		return http.ErrServerClosed
	}
	return err
}

func (d *Drainer) register(srv *http.Server, ln net.Listener, plain bool) (*listener, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Draining() {
		ln.Close()
		return nil, http.ErrServerClosed
	}
	wl := newListener(ln, d, false)
	wl.plain = plain
	d.listeners[wl] = struct{}{}
	d.serving++
	if _, ok := d.servers[srv]; ok {
		return wl, nil
	}
	d.servers[srv] = struct{}{}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = &handler{d: d, h: h}
	prevCtx := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prevCtx != nil {
			ctx = prevCtx(ctx, c)
		}
		ctx = context.WithValue(ctx, begunKey{}, d.begun)
		return context.WithValue(ctx, connKey{}, d.add(c))
	}
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		d.connState(c, st)
		if prev != nil {
			prev(c, st)
		}
	}
	return wl, nil
}

// add registers a new server connection, new until ConnState says
// otherwise. net/http calls ConnContext, and so add, just before it
// reports the connection new.
func (d *Drainer) add(c net.Conn) *connMark {
	m := &connMark{c: c}
	m.st.Store(int32(http.StateNew))
	if hc, ok := c.(*hconn); ok {
		hc.m = m
	}
	if _, ok := c.(probeConn); ok {
		return m // not a client's: not tracked
	}
	d.mu.Lock()
	d.conns[c] = m
	d.mu.Unlock()
	return m
}

// connState follows a server connection. It runs twice for each request
// on a kept-alive connection (active, then idle): for a plaintext
// HTTP/1.1 connection that is two atomic stores and a clock reading,
// without a lock until the drain begins; for the others one map lookup
// under d.mu. Nothing is allocated.
func (d *Drainer) connState(c net.Conn, st http.ConnState) {
	if st == http.StateNew {
		return // registered by add
	}
	if _, ok := c.(probeConn); ok {
		return
	}
	if hc, ok := c.(*hconn); ok && (st == http.StateActive || st == http.StateIdle) {
		if m := hc.m; m != nil && !m.h2.Load() {
			if st == http.StateIdle {
				hc.idle()
			}
			m.set(st)
			if d.draining.Load() {
				d.mu.Lock()
				d.wakeLocked()
				d.mu.Unlock()
			}
			return
		}
	}
	if st == http.StateHijacked {
		if hc, ok := c.(*hconn); ok {
			hc.noMove.Store(true)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.conns[c]
	if !ok {
		if st == http.StateClosed || st == http.StateHijacked {
			return
		}
		// A connection net/http did not pass through ConnContext: the
		// server's ConnContext was replaced after Serve began.
		m = &connMark{c: c}
		d.conns[c] = m
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(d.conns, c)
		if m.isH2 {
			d.h2--
		}
		d.wakeLocked()
	default:
		m.set(st)
		if m.isH2 {
			m.idleSince = time.Time{}
			if st == http.StateIdle {
				m.idleSince = time.Now()
			}
			d.wakeLocked()
		}
	}
}

// connKey is the request context key of a connection's connMark.
type connKey struct{}

// connMark is what the Drainer knows of a server connection.
type connMark struct {
	c  net.Conn
	h2 atomic.Bool // it speaks HTTP/2: set once, by its first request

	st     atomic.Int32 // its http.ConnState
	idleAt atomic.Int64 // when it last became idle (monotonic ns, see now)
	gap    atomic.Int64 // its recent gap between requests (ns, see set)

	// Guarded by the Drainer's mu.
	isH2      bool      // h2, as counted in the Drainer's h2
	idleSince time.Time // HTTP/2 only: no stream open since (zero: streams open)
}

func (m *connMark) state() http.ConnState { return http.ConnState(m.st.Load()) }

// set records a state. A kept-alive connection's gap between requests
// is how long it stayed idle before its latest request, or, decaying by
// a quarter at each request, the longest of its recent gaps: what an
// adaptive idle grace waits for before closing it as idle.
func (m *connMark) set(st http.ConnState) {
	prev := http.ConnState(m.st.Swap(int32(st)))
	switch {
	case st == http.StateIdle:
		m.idleAt.Store(now())
	case st == http.StateActive && prev == http.StateIdle:
		g := now() - m.idleAt.Load()
		if old := m.gap.Load(); g < old-old/4 {
			g = old - old/4
		}
		m.gap.Store(g)
	}
}

// epoch anchors now.
var epoch = time.Now()

// now is a monotonic clock in nanoseconds.
func now() int64 { return int64(time.Since(epoch)) }

// sawHTTP2 records that c speaks HTTP/2 (its first request says so).
func (d *Drainer) sawHTTP2(m *connMark) {
	if m.h2.Swap(true) {
		return
	}
	d.mu.Lock()
	if cur, ok := d.conns[m.c]; ok && cur == m && !m.isH2 {
		m.isH2 = true
		m.idleSince = time.Time{} // a stream is open: this request
		d.h2++
	}
	d.mu.Unlock()
}

// HTTP2 returns how many connections speak HTTP/2.
func (d *Drainer) HTTP2() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.h2
}

func (d *Drainer) signalLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// wakeLocked signals a connection gone. Only a drain waits for that, and
// draining is set (under d.mu) before it starts waiting: before, there is
// nobody to wake, and each closed connection saves an allocation.
func (d *Drainer) wakeLocked() {
	if d.draining.Load() {
		d.signalLocked()
	}
}

// Listen returns a listener whose accepted connections are tracked: on
// Shutdown the listener is closed and the connections are waited for until
// their owners close them, or cut at the deadline. Like Serve, it retries
// temporary accept errors itself.
func (d *Drainer) Listen(ln net.Listener) net.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	wl := newListener(ln, d, true)
	if d.Draining() {
		wl.Close()
	}
	d.listeners[wl] = struct{}{}
	return wl
}

// track registers a raw or hijacked connection.
func (d *Drainer) track(c net.Conn) net.Conn {
	tc := &conn{Conn: c, d: d}
	d.mu.Lock()
	d.raw[tc] = struct{}{}
	d.mu.Unlock()
	return tc
}

func (d *Drainer) untrack(c *conn) {
	d.mu.Lock()
	if _, ok := d.raw[c]; ok {
		delete(d.raw, c)
		d.wakeLocked()
	}
	d.mu.Unlock()
}

// StopAccepting begins the drain without waiting: it closes the listeners
// and from now on responses carry "Connection: close". Shutdown, called
// later, does the rest. During a hand-over the old generation calls it
// before the new one starts accepting, so that only one accepts at a time.
func (d *Drainer) StopAccepting() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopAcceptingLocked()
}

func (d *Drainer) stopAcceptingLocked() {
	if d.draining.Swap(true) {
		return
	}
	for _, cancel := range d.cancels {
		cancel()
	}
	close(d.begun)
	for ln := range d.listeners {
		ln.Close()
	}
	for _, f := range d.onDrain {
		go f()
	}
}

// Shutdown drains every server and listener given to d, in the order
// described in the package documentation, and returns when all
// connections are gone or ctx ends. It may be called once.
func (d *Drainer) Shutdown(ctx context.Context) (Report, error) {
	start := time.Now()
	if !d.shutdown.CompareAndSwap(false, true) {
		return Report{}, errors.New("drain: Shutdown called twice")
	}
	d.mu.Lock()
	d.stopAcceptingLocked()
	servers := make([]*http.Server, 0, len(d.servers))
	for s := range d.servers {
		servers = append(servers, s)
	}
	d.mu.Unlock()

	d.awaitMoves(ctx)
	close(d.handed)
	d.grace(ctx)
	d.settleHTTP2(ctx)
	early := d.early()

	// The servers' Shutdown closes idle connections and waits for the rest,
	// but notices the last one only at its next poll (up to 500ms apart):
	// end as soon as the tracked connections are gone instead, once every
	// accept loop has returned (a connection accepted just before the
	// listener closed is reported to ConnState only after Accept returns).
	sctx, scancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Shutdown(sctx) // its error is ctx's; what is left is counted below
		}()
	}
	d.waitAll(ctx, nil, true)
	scancel()
	wg.Wait()

	var r Report
	d.mu.Lock()
	for _, c := range early {
		if _, ok := d.conns[c]; !ok {
			r.Cut++ // closed as idle by the servers' Shutdown
		}
	}
	d.mu.Unlock()
	if ctx.Err() == nil {
		r.Duration = time.Since(start)
		if r.Cut == 0 {
			return r, nil
		}
		return r, fmt.Errorf("%w: %d with work under way closed as idle by the server after %v", ErrCut, r.Cut, r.Duration.Round(time.Millisecond))
	}
	d.mu.Lock()
	cut, idle := d.classifyLocked()
	for c := range d.raw {
		c.Conn.Close()
	}
	d.mu.Unlock()
	for _, s := range servers {
		s.Close()
	}
	r.Duration, r.Cut, r.Idle = time.Since(start), r.Cut+cut, idle
	if r.Cut == 0 {
		if idle > 0 {
			d.logger().Infof("drain: closed %d idle connections at the deadline, none with a request under way", idle)
		}
		return r, nil
	}
	return r, fmt.Errorf("%w: %d cut (and %d idle closed) after %v: %w", ErrCut, r.Cut, idle, r.Duration.Round(time.Millisecond), context.Cause(ctx))
}

// early lists the server connections with work under way that net/http
// calls new or idle, just before the servers' Shutdown begins. net/http's
// Shutdown closes as if idle a connection still reading its first
// request header after 5 seconds (net/http issue 22682), and one
// answering a pipelined request read from net/http's buffer, which never
// marks its connection active; and it drops every request it reads after
// it began. So each of these that goes before the deadline lost work.
func (d *Drainer) early() []net.Conn {
	type entry struct {
		c  net.Conn
		st http.ConnState
	}
	d.mu.Lock()
	candidates := make([]entry, 0, len(d.conns))
	for c, m := range d.conns {
		if st := m.state(); st == http.StateNew || st == http.StateIdle {
			candidates = append(candidates, entry{c, st})
		}
	}
	d.mu.Unlock()
	var early []net.Conn
	for _, e := range candidates {
		if underWay(e.c, e.st) {
			early = append(early, e.c)
		}
	}
	return early
}

// classifyLocked counts the connections left at the deadline: cut are
// those with work under way, idle the others (see Report).
func (d *Drainer) classifyLocked() (cut, idle int) {
	cut = len(d.raw)
	for c, m := range d.conns {
		if st := m.state(); st == http.StateActive || underWay(c, st) {
			cut++
		} else {
			idle++
		}
	}
	return cut, idle
}

func (d *Drainer) logger() Logger {
	if d.opts.Logger == nil {
		return discard{}
	}
	return d.opts.Logger
}

type discard struct{}

func (discard) Infof(string, ...any) {}
func (discard) Warnf(string, ...any) {}

// grace keeps kept-alive connections served while their clients may
// still send a request on them, ending early once no connection is left
// and every accept loop has returned: net/http drops a request it reads
// after its Shutdown has begun, so a connection accepted just before the
// listeners closed must be registered (and its request read) before that.
//
// The grace adapts to each connection: one waiting for its next request
// is closed once it has been idle for twice its own recent gap between
// requests, and never before the idle grace (Options.IdleGrace): at
// thousands of connections a client's next request on a connection may
// come seconds apart, and a fixed second would close connections under
// requests on their way. The whole grace ends when no connection is left
// waiting within its time, and lasts at most maxGraceFactor times the
// idle grace or half the time left to the deadline. What is still idle
// then is closed by the servers' Shutdown, as before.
func (d *Drainer) grace(ctx context.Context) {
	g := d.opts.IdleGrace
	if g == 0 {
		g = DefaultIdleGrace
	}
	if g < 0 {
		return
	}
	start := time.Now()
	limit := start.Add(maxGraceFactor * g)
	if dl, ok := ctx.Deadline(); ok {
		if half := start.Add(time.Until(dl) / 2); half.Before(limit) {
			limit = half
		}
	}
	if limit.Before(start.Add(g)) {
		limit = start.Add(g)
	}
	tick := time.NewTicker(graceTick)
	defer tick.Stop()
	var closing []net.Conn
	for {
		t := now()
		past := time.Since(start) >= g
		d.mu.Lock()
		n := len(d.conns) + len(d.raw) + d.serving
		waiting := 0
		closing = closing[:0]
		for c, m := range d.conns {
			if m.isH2 || m.h2.Load() {
				continue // settleHTTP2's
			}
			switch m.state() {
			case http.StateIdle:
				allow := min(max(2*time.Duration(m.gap.Load()), g), maxGraceFactor*g)
				if time.Duration(t-m.idleAt.Load()) < allow {
					waiting++
				} else if past {
					closing = append(closing, c)
				}
			case http.StateNew:
				if !past {
					waiting++
				}
			}
		}
		ch := d.changed
		d.mu.Unlock()
		for _, c := range closing {
			// One with work under way (answers its client does not
			// read) is left to the servers' Shutdown, which counts it.
			if !underWay(c, http.StateIdle) {
				closeIdle(c)
			}
		}
		if n == 0 || past && waiting == 0 || !time.Now().Before(limit) {
			return
		}
		// Until the next look through the connections, only the end of
		// the last one ends the grace early.
		for wait := true; wait; {
			select {
			case <-ch:
				d.mu.Lock()
				gone := len(d.conns)+len(d.raw)+d.serving == 0
				ch = d.changed
				d.mu.Unlock()
				if gone {
					return
				}
			case <-tick.C:
				wait = false
			case <-ctx.Done():
				return
			}
		}
	}
}

// maxGraceFactor bounds the adaptive idle grace, in idle graces.
const maxGraceFactor = 10

// graceTick is how often the grace looks at the idle connections.
const graceTick = 50 * time.Millisecond

// closeIdle closes a connection waiting for its next request. A request
// that reaches it at that very moment is lost, as with any server that
// closes a kept-alive connection; the adaptive grace makes that moment
// one at which the client has been silent for twice its usual gap.
func closeIdle(c net.Conn) { c.Close() }

// settleHTTP2 lets busy HTTP/2 connections finish before the servers'
// Shutdown sends every one of them GOAWAY: it returns once each HTTP/2
// connection left has had no open stream for the idle grace, or half of
// the time left to the deadline has passed. A client's streams on a
// connection it keeps busy are answered meanwhile; HTTP/2 has no
// "Connection: close", and a client that does not reconnect after GOAWAY
// (a benchmark tool such as h2load) would lose every request it has yet
// to send.
func (d *Drainer) settleHTTP2(ctx context.Context) {
	g := d.opts.IdleGrace
	if g == 0 {
		g = DefaultIdleGrace
	}
	if g < 0 {
		return
	}
	limit := time.Now().Add(g)
	if dl, ok := ctx.Deadline(); ok {
		limit = time.Now().Add(time.Until(dl) / 2)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(limit) {
		d.mu.Lock()
		busy := false
		for _, m := range d.conns {
			if m.isH2 && (m.idleSince.IsZero() || time.Since(m.idleSince) < g) {
				busy = true
				break
			}
		}
		ch := d.changed
		d.mu.Unlock()
		if !busy {
			return
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// waitAll waits until no connection is left (and, with loops, no Serve
// call is still running), ctx ends, or timeout (which may be nil) fires.
func (d *Drainer) waitAll(ctx context.Context, timeout <-chan time.Time, loops bool) {
	for {
		d.mu.Lock()
		n := len(d.conns) + len(d.raw)
		if loops {
			n += d.serving
		}
		ch := d.changed
		d.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}
