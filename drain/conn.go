package drain

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// hconn is a plaintext connection of a server given to Serve: the
// connection net/http reads and writes. It lets the Drainer hand the
// connection to the next generation (see HandOver) at a moment when no
// byte of the client's next request has been read by this process, and
// it holds the connection's state so that a request on a kept-alive
// connection costs no lock.
//
// The moment is a Read that net/http makes between two requests, when
// nothing has been read since the last answer was done (ConnState idle)
// and net/http's own buffer is empty. net/http reads a connection
// through a bufio.Reader of 4 KiB, which reads into the free end of its
// buffer after sliding what it holds to the front: the capacity of the
// slice it reads into is that of the whole buffer (the capacity of the
// connection's first Read) exactly when it holds nothing. So a Read goes
// ahead with a hand-over when its capacity is the whole buffer's, no
// byte has been read since the connection went idle (or since it was
// accepted), and no handler is running (net/http calls a pipelined
// request's connection idle while it is answered). Any other Read
// (net/http's one-byte background read while a handler runs, a body, a
// header begun, a buffer that holds part of a pipelined request) is
// not the moment; the connection then goes at its next such Read, once
// the request it has begun has been answered.
type hconn struct {
	net.Conn
	d       *Drainer
	m       *connMark
	adopted bool // passed from a previous generation

	full int // cap(p) of the first Read: net/http's whole buffer

	// dirty: bytes were read since the connection went idle (or was
	// accepted); busy: a handler runs, from its start until the
	// connection goes idle again.
	dirty, busy atomic.Bool

	// noMove is set when the connection must stay: it speaks HTTP/2, was
	// hijacked, or its hand-over failed.
	noMove atomic.Bool
	moved  atomic.Bool

	mu     sync.Mutex
	rdl    time.Time // the read deadline net/http asked for
	kicked bool      // a Read was interrupted here, not by net/http
}

// h2Preface begins every HTTP/2 connection with prior knowledge (h2c).
var h2Preface = []byte("PRI * HTTP/2.0")

// errMoved is what net/http reads from a connection handed over: the
// end, so that it closes this process's descriptor without a word.
var errMoved = io.EOF

func (c *hconn) Read(p []byte) (int, error) {
	if c.full == 0 {
		c.full = cap(p)
		n, err := c.read(p)
		if n > 0 && bytes.HasPrefix(h2Preface, p[:min(n, len(h2Preface))]) {
			c.noMove.Store(true)
		}
		return n, err
	}
	return c.read(p)
}

func (c *hconn) read(p []byte) (int, error) {
	if c.moved.Load() {
		// net/http may read again after the end it was told of (it reads
		// on after a failed h2c preface check): it is the end still.
		return 0, errMoved
	}
	for {
		if c.d.mover.Load() != nil && c.between(p) && c.moveOut() {
			return 0, errMoved
		}
		n, err := c.Conn.Read(p)
		if n == 0 && err != nil && c.wasKicked(err) {
			continue
		}
		if n > 0 && !c.dirty.Load() {
			c.dirty.Store(true)
		}
		return n, err
	}
}

// between reports whether a Read into p is net/http's, between two
// requests, with nothing of the next one read (see hconn).
func (c *hconn) between(p []byte) bool {
	return cap(p) == c.full && !c.dirty.Load() && !c.busy.Load() && !c.noMove.Load()
}

// idle records that the connection's answer is done: ConnState idle.
func (c *hconn) idle() {
	c.dirty.Store(false)
	c.busy.Store(false)
}

// moveOut passes the connection on; it reports whether it went.
func (c *hconn) moveOut() bool {
	mv := c.d.mover.Load()
	if mv == nil {
		return false
	}
	if err := mv.move(c.Conn); err != nil {
		c.noMove.Store(true)
		c.d.moveFailed(err)
		return false
	}
	c.moved.Store(true)
	c.d.moves.Add(1)
	return true
}

// kick interrupts a Read under way, so that it looks again whether the
// connection is to go. net/http does not see the interruption: the Read
// goes on with net/http's own deadline.
func (c *hconn) kick() {
	c.mu.Lock()
	c.kicked = true
	c.Conn.SetReadDeadline(aLongTimeAgo)
	c.mu.Unlock()
}

var aLongTimeAgo = time.Unix(1, 0)

// wasKicked reports whether err is the interruption of kick, and puts
// net/http's deadline back if so.
func (c *hconn) wasKicked(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.kicked {
		return false
	}
	c.kicked = false
	c.Conn.SetReadDeadline(c.rdl)
	return true
}

func (c *hconn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl, c.kicked = t, false
	return c.Conn.SetReadDeadline(t)
}

func (c *hconn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl, c.kicked = t, false
	return c.Conn.SetDeadline(t)
}

// Write refuses once the connection has gone: its client is another
// process's now.
func (c *hconn) Write(b []byte) (int, error) {
	if c.moved.Load() {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

// ReadFrom keeps net/http's sendfile and splice paths.
func (c *hconn) ReadFrom(r io.Reader) (int64, error) {
	if c.moved.Load() {
		return 0, net.ErrClosed
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite is net/http's half-close before it closes a connection
// (TCP FIN). A connection handed over is shared with the next
// generation: shutting it down would end it there too.
func (c *hconn) CloseWrite() error {
	if c.moved.Load() {
		return nil
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn lets the Drainer ask the kernel about the connection.
func (c *hconn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("drain: connection has no descriptor")
	}
	return sc.SyscallConn()
}

// mover is an armed hand-over.
type mover struct {
	move func(net.Conn) error
}
