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

// ErrCut is wrapped by the error Shutdown returns when its context ended
// with connections still open, which it then closed by force.
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
	// Cut is how many connections were closed by force at the deadline.
	Cut int
}

// Drainer tracks the connections of the servers and listeners it was
// given, and shuts them down in order. Use New to make one.
type Drainer struct {
	opts     Options
	draining atomic.Bool
	shutdown atomic.Bool

	mu        sync.Mutex
	servers   map[*http.Server]struct{}
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]http.ConnState // connections of the servers
	raw       map[*conn]struct{}          // raw and hijacked connections
	serving   int                         // Serve calls that have not returned
	onDrain   []func()
	changed   chan struct{} // closed and replaced when a connection goes
}

// New returns a Drainer.
func New(opts Options) *Drainer {
	return &Drainer{
		opts:      opts,
		servers:   make(map[*http.Server]struct{}),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]http.ConnState),
		raw:       make(map[*conn]struct{}),
		changed:   make(chan struct{}),
	}
}

// Draining reports whether Shutdown has begun.
func (d *Drainer) Draining() bool { return d.draining.Load() }

// Connections returns how many connections are open: those of the servers
// (idle ones included) and the raw and hijacked ones.
func (d *Drainer) Connections() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns) + len(d.raw)
}

// InFlight returns how many connections have work under way: server
// connections reading or answering a request, and raw and hijacked ones.
func (d *Drainer) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inFlightLocked()
}

func (d *Drainer) inFlightLocked() int {
	n := len(d.raw)
	for _, st := range d.conns {
		if st != http.StateIdle {
			n++
		}
	}
	return n
}

// OnDrain registers f to be called, in its own goroutine, when Shutdown
// begins: a place to tell long-lived connections (streams, websockets) to
// finish.
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
// server may be served on several listeners.
func (d *Drainer) Serve(srv *http.Server, ln net.Listener) error {
	if err := d.register(srv, ln); err != nil {
		return err
	}
	defer func() {
		d.mu.Lock()
		d.serving--
		d.signalLocked()
		d.mu.Unlock()
	}()
	err := srv.Serve(ln)
	if d.Draining() {
		return http.ErrServerClosed
	}
	return err
}

func (d *Drainer) register(srv *http.Server, ln net.Listener) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Draining() {
		ln.Close()
		return http.ErrServerClosed
	}
	d.listeners[ln] = struct{}{}
	d.serving++
	if _, ok := d.servers[srv]; ok {
		return nil
	}
	d.servers[srv] = struct{}{}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = &handler{d: d, h: h}
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		d.connState(c, st)
		if prev != nil {
			prev(c, st)
		}
	}
	return nil
}

func (d *Drainer) connState(c net.Conn, st http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(d.conns, c)
		d.wakeLocked()
	default:
		d.conns[c] = st
	}
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
// their owners close them, or cut at the deadline.
func (d *Drainer) Listen(ln net.Listener) net.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Draining() {
		ln.Close()
	}
	d.listeners[ln] = struct{}{}
	return &listener{Listener: ln, d: d}
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

	d.grace(ctx)

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

	if ctx.Err() == nil {
		return Report{Duration: time.Since(start)}, nil
	}
	d.mu.Lock()
	cut := d.inFlightLocked()
	for c := range d.raw {
		c.Conn.Close()
	}
	d.mu.Unlock()
	for _, s := range servers {
		s.Close()
	}
	r := Report{Duration: time.Since(start), Cut: cut}
	if cut == 0 {
		return r, nil
	}
	return r, fmt.Errorf("%w: %d cut after %v: %w", ErrCut, cut, r.Duration.Round(time.Millisecond), context.Cause(ctx))
}

// grace keeps kept-alive connections served for the idle grace, ending
// early once no connection is left and every accept loop has returned:
// net/http drops a request it reads after its Shutdown has begun, so a
// connection accepted just before the listeners closed must be registered
// (and its request read) before that.
func (d *Drainer) grace(ctx context.Context) {
	g := d.opts.IdleGrace
	if g == 0 {
		g = DefaultIdleGrace
	}
	if g < 0 {
		return
	}
	t := time.NewTimer(g)
	defer t.Stop()
	d.waitAll(ctx, t.C, true)
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

type listener struct {
	net.Listener
	d *Drainer
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.d.track(c), nil
}

type conn struct {
	net.Conn
	d    *Drainer
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.d.untrack(c) })
	return err
}
