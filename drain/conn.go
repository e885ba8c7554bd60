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
// net/http reads a connection through its own 4 KiB buffer, so a Read
// with the length of the connection's first Read is a Read into an empty
// buffer: nothing of the next request is held in this process. A Read
// with any other length (net/http's one-byte background read while a
// handler runs, or a buffer that holds part of a pipelined request) is
// never the moment; the connection then goes at its next empty Read,
// once the request it has begun has been answered.
type hconn struct {
	net.Conn
	d       *Drainer
	m       *connMark
	adopted bool // passed from a previous generation

	first int // len(p) of the first Read: net/http's empty buffer

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
	if c.first == 0 {
		c.first = len(p)
		n, err := c.read(p)
		if n > 0 && bytes.HasPrefix(h2Preface, p[:min(n, len(h2Preface))]) {
			c.noMove.Store(true)
		}
		return n, err
	}
	return c.read(p)
}

func (c *hconn) read(p []byte) (int, error) {
	for {
		if len(p) == c.first && c.d.mover.Load() != nil && !c.noMove.Load() && c.moveOut() {
			return 0, errMoved
		}
		n, err := c.Conn.Read(p)
		if n == 0 && err != nil && c.wasKicked(err) {
			continue
		}
		return n, err
	}
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
