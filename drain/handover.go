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
		al = &adoptListener{conns: make(chan net.Conn), closed: make(chan struct{}), addr: c.LocalAddr()}
		d.adopt[srv] = al
	}
	d.mu.Unlock()
	if !ok {
		go d.Serve(srv, al)
	}
	select {
	case al.conns <- c:
		return nil
	case <-al.closed:
		return d.passOn(c)
	}
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
// connections passed to Adopt.
type adoptListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func (l *adoptListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *adoptListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *adoptListener) Addr() net.Addr { return l.addr }
