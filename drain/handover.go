package drain

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// HandOver arms the hand-over of the drain to come; call it before
// StopAccepting or Shutdown. From then on each plaintext HTTP/1.1
// connection of the servers given to Serve goes to move at the first
// moment no byte of its client's next request has been read by this
// process: at once for a connection waiting for its next request or for
// its first, after the answer for one with a request under way. Those
// answers carry no "Connection: close": the client goes on with the same
// connection, served by whoever move passed it to.
//
// move must take its own descriptor of the connection (SCM_RIGHTS to
// another process, or a dup); once it returns nil this process closes
// its own, without shutting the connection down. Connections over TLS
// (their state lives in this process), HTTP/2 and hijacked connections
// never go: they drain as without HandOver. When move fails, that
// connection and all later ones drain as without HandOver too, and
// Shutdown logs why.
//
// Shutdown then waits (up to its deadline) until every connection that
// can go has gone, before the idle grace begins for the others.
func (d *Drainer) HandOver(move func(net.Conn) error) {
	if move == nil {
		return
	}
	d.mover.Store(&mover{move: move})
	d.mu.Lock()
	conns := make([]*hconn, 0, len(d.conns))
	for c := range d.conns {
		if hc, ok := c.(*hconn); ok && !hc.noMove.Load() {
			conns = append(conns, hc)
		}
	}
	d.mu.Unlock()
	// A connection waiting in Read for its next request looks again.
	for _, hc := range conns {
		hc.kick()
	}
}

// Moved returns how many connections have been handed over.
func (d *Drainer) Moved() int { return int(d.moves.Load()) }

// moveFailed disarms the hand-over: the connections left drain as
// without it.
func (d *Drainer) moveFailed(err error) {
	if d.mover.Swap(nil) == nil {
		return
	}
	d.mu.Lock()
	d.moveErr = err
	d.mu.Unlock()
	d.logger().Warnf("drain: handing connections over failed after %d: %v; the others drain here", d.moves.Load(), err)
}

// movable reports whether c is a connection that HandOver would pass on.
func movable(c net.Conn, m *connMark) bool {
	hc, ok := c.(*hconn)
	return ok && !hc.noMove.Load() && !hc.moved.Load() && !m.h2.Load()
}

// closeOnDrain reports whether an answer written while draining must
// carry "Connection: close": not on a connection that is to go to the
// next generation.
func (d *Drainer) closeOnDrain(m *connMark) bool {
	if m == nil || d.mover.Load() == nil {
		return true
	}
	return !movable(m.c, m)
}

// awaitMoves waits, while a hand-over is armed, until no connection that
// can go is left and every accept loop has returned, or ctx ends. It
// looks through the connections at most every scanEvery: at thousands
// of connections leaving one after another, a scan at each would cost
// the square of their number.
func (d *Drainer) awaitMoves(ctx context.Context) {
	t := time.NewTicker(scanEvery)
	defer t.Stop()
	for d.mover.Load() != nil {
		d.mu.Lock()
		n := d.serving
		for c, m := range d.conns {
			if movable(c, m) {
				n++
			}
		}
		d.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// scanEvery is how often a drain looks through every connection.
const scanEvery = 20 * time.Millisecond

// Adopt serves c, a connection a previous generation handed over, on srv
// as if srv's listener had accepted it; srv is served as by Serve (on a
// listener of adopted connections) if it is not yet. Once the drain has
// begun, c goes on at once to where HandOver passes connections (nothing
// of its next request has been read: the previous generation handed it
// over at that moment); without a hand-over armed, or if it fails, c is
// closed and Adopt returns http.ErrServerClosed.
func (d *Drainer) Adopt(srv *http.Server, c net.Conn) error {
	d.mu.Lock()
	if d.Draining() {
		d.mu.Unlock()
		return d.passOn(c)
	}
	if d.adopt == nil {
		d.adopt = make(map[*http.Server]*adoptListener)
	}
	al, ok := d.adopt[srv]
	if !ok {
		al = &adoptListener{addr: c.LocalAddr()}
		al.ready = sync.NewCond(&al.mu)
		d.adopt[srv] = al
	}
	d.mu.Unlock()
	if !ok {
		// Registered before Adopt returns, so that the drain closes the
		// listener, and its accept loop gives out what it holds.
		wl, err := d.register(srv, al, true)
		if err != nil {
			// Draining already (register closed al): what another Adopt
			// queued meanwhile goes on too.
			for _, q := range al.take() {
				d.passOn(q)
			}
			return d.passOn(c)
		}
		go d.serveOn(srv, wl, false)
	}
	if !al.push(c) {
		return d.passOn(c)
	}
	return nil
}

// passOn moves c, adopted while draining, on to the next generation.
func (d *Drainer) passOn(c net.Conn) error {
	if mv := d.mover.Load(); mv != nil {
		err := mv.move(c)
		if err == nil {
			d.moves.Add(1)
			c.Close() // this process's descriptor only: the next one has its own
			return nil
		}
		d.moveFailed(err)
	}
	c.Close()
	return http.ErrServerClosed
}

// adoptListener is the listener through which a server accepts the
// connections passed to Adopt. It queues them, so that Adopt does not
// wait for the server's accept loop (at thousands of connections from
// the previous generation, a wait for each to be accepted in turn made
// the last ones wait seconds); once closed, it still gives out what it
// holds, then net.ErrClosed.
type adoptListener struct {
	mu     sync.Mutex
	ready  *sync.Cond // signaled when queue grows or closed is set
	queue  []net.Conn
	closed bool
	addr   net.Addr
}

// push queues c; false once the listener gave out its last connection.
func (l *adoptListener) push(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.queue = append(l.queue, c)
	l.ready.Signal()
	return true
}

// take empties the queue of a closed listener that no accept loop serves.
func (l *adoptListener) take() []net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queue
	l.queue = nil
	return q
}

func (l *adoptListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.queue) == 0 && !l.closed {
		l.ready.Wait()
	}
	if len(l.queue) == 0 {
		return nil, net.ErrClosed
	}
	c := l.queue[0]
	l.queue[0] = nil
	l.queue = l.queue[1:]
	return c, nil
}

func (l *adoptListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.ready.Broadcast()
	return nil
}

func (l *adoptListener) Addr() net.Addr { return l.addr }
