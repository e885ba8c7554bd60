package drain

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Backoff between retries of a temporary accept error, as net/http's
// Serve does it: 5ms doubling up to a second.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// burstQuiet is how long accepting must have worked, counted from the last
// failure, before a burst of accept errors is over: failures closer
// together than this belong to one burst and to one warning.
const burstQuiet = time.Second

// listener is a listener given to Serve or Listen. It retries temporary
// accept errors itself, with a backoff, and logs them once per burst;
// with raw set it tracks the connections it accepts.
type listener struct {
	net.Listener
	d     *Drainer
	raw   bool
	plain bool // a plaintext server's: its connections are hconns
	probe bool // ServeProbe's: its connections are probeConns

	closeOnce sync.Once
	closed    chan struct{} // closed by Close, to end a backoff

	failing atomic.Bool // a burst of accept errors is under way
	mu      sync.Mutex  // guards the burst below
	fails   int
	first   time.Time // the burst's first failure
	last    time.Time // its latest
}

func newListener(ln net.Listener, d *Drainer, raw bool) *listener {
	return &listener{Listener: ln, d: d, raw: raw, closed: make(chan struct{})}
}

func (l *listener) Accept() (net.Conn, error) {
	delay := minAcceptDelay
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.failing.Load() {
				l.accepted()
			}
			if l.raw {
				return l.d.track(c), nil
			}
			if l.probe {
				return probeConn{c}, nil
			}
			if _, fd := c.(syscall.Conn); l.plain && fd {
				_, adopted := l.Listener.(*adoptListener)
				return &hconn{Conn: c, d: l.d, adopted: adopted}, nil
			}
			return c, nil
		}
		if !temporary(err) {
			if l.failing.Load() {
				l.stopped(err)
			}
			return nil, err
		}
		l.failed(err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			l.stopped(net.ErrClosed)
			return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
		}
		delay = min(2*delay, maxAcceptDelay)
	}
}

// failed records a temporary accept error, and warns at the start of a
// burst.
func (l *listener) failed(err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails++
	l.last = now
	if l.failing.Load() {
		return
	}
	l.failing.Store(true)
	l.first = now
	l.fails = 1
	l.d.logger().Warnf("%v (retrying with backoff; logged once per burst)", err)
}

// accepted ends a burst once accepting has worked for burstQuiet since its
// last failure.
func (l *listener) accepted() {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.failing.Load() || now.Sub(l.last) < burstQuiet {
		return
	}
	l.failing.Store(false)
	l.d.logger().Infof("accept %s %s works again after %d failures in %v", l.Addr().Network(), l.Addr(), l.fails, l.last.Sub(l.first).Round(time.Millisecond))
}

// stopped ends a burst when the listener fails for good (it was closed).
func (l *listener) stopped(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.failing.Load() {
		return
	}
	l.failing.Store(false)
	l.d.logger().Infof("accept %s %s stopped after %d failures in %v: %v", l.Addr().Network(), l.Addr(), l.fails, l.last.Sub(l.first).Round(time.Millisecond), err)
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// probeConn is a connection of ServeProbe's listener: the service's
// own, not a client's, and so not tracked.
type probeConn struct{ net.Conn }

// conn is a raw or hijacked connection, untracked when closed.
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
