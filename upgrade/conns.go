package upgrade

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The conns channel: a second socketpair over which the old generation
// passes connections (SCM_RIGHTS) to the new one after the commit (see
// the package documentation).
const (
	// lineConns is the new generation's acknowledgement: it takes
	// connections.
	lineConns = "conns\n"
	// verbConns starts each message: "conns <name> <n>\n".
	verbConns = "conns"
	// maxConnsPerMessage is the most descriptors one message carries:
	// the kernel's SCM_MAX_FD.
	maxConnsPerMessage = 253
	// maxConnsLine bounds a message's header line, newline included.
	maxConnsLine = len(verbConns+" ") + maxFileName + len(" 253\n")
	// connsSendTimeout bounds the wait of one message for room in the
	// channel: a new generation that takes nothing for that long is taken
	// to hang, and the sender fails.
	connsSendTimeout = 5 * time.Second
)

var (
	// ErrNoConns is returned by Handoff.TakeConns when there is no
	// previous generation to take connections from, or it passes none
	// (an older version, which gives no conns channel).
	ErrNoConns = errors.New("upgrade: the old generation passes no connections")

	errConnsClosed = fmt.Errorf("upgrade: connection sender closed: %w", net.ErrClosed)
	// errLead tells a waiting Send that it writes the next message.
	errLead = errors.New("lead")
)

// checkConnName reports why name cannot name the socket of a passed
// connection: the rules of a passed file's name (those of systemd's
// FDNAME=), so that any listener's name will do.
func checkConnName(name string) error {
	return checkName("socket name", name)
}

// ConnSender passes connections to the new generation, over the conns
// channel, once it is the main process (Options.OnConns). It is safe for
// concurrent use.
type ConnSender struct {
	c       *net.UnixConn
	timeout time.Duration // connsSendTimeout

	// slots bounds the descriptors duplicated and not yet sent: at
	// thousands of connections sent at once, a duplicate of each would
	// double the process's descriptors (EMFILE).
	slots chan struct{}

	mu      sync.Mutex
	idle    *sync.Cond // signaled when writing turns false
	queue   []*outgoing
	writing bool // a Send is writing a message; the queue waits for it
	closed  bool
	err     error
	sent    int
}

// maxConnsQueued is how many Sends may hold a duplicate of their
// descriptor at once: four messages' worth.
const maxConnsQueued = 4 * maxConnsPerMessage

// outgoing is a descriptor that a Send queued.
type outgoing struct {
	name string
	fd   int
	done chan error // nil: sent; errLead: write the next message
}

func newConnSender(c *net.UnixConn) *ConnSender {
	s := &ConnSender{c: c, timeout: connsSendTimeout, slots: make(chan struct{}, maxConnsQueued)}
	s.idle = sync.NewCond(&s.mu)
	return s
}

// Send passes a duplicate of c's descriptor to the new generation, which
// receives it as a connection of the socket named name
// (Handoff.ReceiveConns). It returns once the descriptor is in the
// channel (not once the new generation has taken it), or with the reason
// it is not; the caller then still owns c, and closes it as it would
// have without a new generation. On success c is shared by both
// generations: the caller closes its copy with Close, which acts on the
// descriptor only, and must neither read from it any more (a read under
// way races the new generation for the next bytes) nor shut it down
// (CloseWrite acts on the connection itself). What this process has
// already read from c into its own buffers does not move.
//
// Concurrent Sends are passed together, in as few messages as there are
// names among them, each of at most 253 descriptors; a Send with no
// other pending costs one message and waits for nothing else. A Send
// fails at once for a bad name (1 to 255 printable ASCII characters
// without ':' or space) or a c that is not a socket. After the first
// failure to write to the channel (the new generation exited: EPIPE; or
// took nothing within 5 seconds) every Send fails at once with that
// error, and after Close with an error wrapping net.ErrClosed.
func (s *ConnSender) Send(name string, c syscall.Conn) error {
	if err := checkConnName(name); err != nil {
		return fmt.Errorf("upgrade: cannot send a connection: %w", err)
	}
	s.mu.Lock()
	err := s.unusable()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.slots <- struct{}{}
	defer func() { <-s.slots }()
	fd, err := dupSocket(c)
	if err != nil {
		return fmt.Errorf("upgrade: cannot send a connection of %s: %w", name, err)
	}
	o := &outgoing{name: name, fd: fd, done: make(chan error, 1)}
	s.mu.Lock()
	if err := s.unusable(); err != nil {
		s.mu.Unlock()
		closeFDs([]int{fd})
		return err
	}
	s.queue = append(s.queue, o)
	lead := !s.writing
	s.writing = true
	s.mu.Unlock()
	if !lead {
		if err := <-o.done; err != errLead {
			return err
		}
	}
	s.write()
	return <-o.done
}

// unusable is the error of a Send on a failed or closed sender, or nil.
// s.mu is held.
func (s *ConnSender) unusable() error {
	switch {
	case s.err != nil:
		return s.err
	case s.closed:
		return errConnsClosed
	}
	return nil
}

// write sends one message: the descriptors queued under the name of the
// first in the queue, at most maxConnsPerMessage, in order. Then it
// hands the writing on to the first of the queue, if any.
func (s *ConnSender) write() {
	s.mu.Lock()
	name := s.queue[0].name
	var batch []*outgoing
	rest := s.queue[:0]
	for _, o := range s.queue {
		if o.name == name && len(batch) < maxConnsPerMessage {
			batch = append(batch, o)
		} else {
			rest = append(rest, o)
		}
	}
	clear(s.queue[len(rest):])
	s.queue = rest
	s.mu.Unlock()

	fds := make([]int, len(batch))
	for i, o := range batch {
		fds[i] = o.fd
	}
	hdr := make([]byte, 0, maxConnsLine)
	hdr = append(hdr, verbConns+" "...)
	hdr = append(hdr, name...)
	hdr = append(hdr, ' ')
	hdr = strconv.AppendInt(hdr, int64(len(batch)), 10)
	hdr = append(hdr, '\n')
	deadline := time.Now().Add(s.timeout)
	s.c.SetWriteDeadline(deadline)
	err := writeMsg(s.c, hdr, fds)
	// ETOOMANYREFS: the descriptors this user has in flight in unix
	// sockets (sent, not yet received) would pass its open-file limit;
	// they drain as the new generation takes them.
	for errors.Is(err, syscall.ETOOMANYREFS) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		err = writeMsg(s.c, hdr, fds)
	}
	closeFDs(fds)

	s.mu.Lock()
	var failed []*outgoing
	var next *outgoing
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("the new generation took nothing within %v: %w", s.timeout, err)
		}
		s.err = fmt.Errorf("upgrade: sending connections to the new generation: %w", err)
		failed, s.queue = s.queue, nil
	} else {
		s.sent += len(batch)
	}
	if len(s.queue) > 0 {
		next = s.queue[0]
	} else {
		s.writing = false
		s.idle.Broadcast()
	}
	serr := s.err
	s.mu.Unlock()

	for _, o := range batch {
		if err != nil {
			o.done <- serr
		} else {
			o.done <- nil
		}
	}
	for _, o := range failed {
		closeFDs([]int{o.fd})
		o.done <- serr
	}
	if next != nil {
		next.done <- errLead
	}
}

// Close ends the stream: the new generation's ReceiveConns returns nil
// once it has taken what was sent. Sends under way when Close is called
// are finished first; later ones fail. Close is idempotent.
func (s *ConnSender) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for s.writing {
		s.idle.Wait()
	}
	s.mu.Unlock()
	return s.c.Close()
}

// Sent returns how many descriptors have gone into the channel.
func (s *ConnSender) Sent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// TakeConns tells the old generation that this one takes connections
// over the conns channel: call it after Ready and before Accepting, and
// ReceiveConns after Accepting. It returns an error wrapping ErrNoConns
// for a nil Handoff (a process started afresh) or when the old
// generation passed no conns channel (an older version); this process
// then gets no connections, and the old generation closes its own as it
// always did. Called again it does nothing.
func (h *Handoff) TakeConns() error {
	switch {
	case h == nil:
		return fmt.Errorf("%w: not started by a previous generation", ErrNoConns)
	case h.conns == nil && h.connsTaken:
		return nil
	case h.conns == nil:
		return fmt.Errorf("%w: no %s (the old generation is an older version)", ErrNoConns, envConnsFD)
	case h.accepted:
		return errors.New("upgrade: TakeConns after Accepting: the old generation no longer looks")
	case h.connsTaken:
		return nil
	}
	// A fresh socket's buffer is empty: the write does not wait.
	h.conns.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := io.WriteString(h.conns, lineConns)
	h.conns.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("upgrade: taking connections: %w", err)
	}
	h.connsTaken = true
	return nil
}

// ReceiveConns takes the connections the old generation passes, until it
// closes its end (ConnSender.Close, or it exited): call it after
// Accepting returned nil or ErrOrphaned. For each connection it calls fn
// with the name of the socket it came from; fn owns the conn, and should
// hand it to a server rather than serve it (the old generation waits
// while fn runs). The messages' connections are made and passed on by
// several goroutines at once (a message's in order), so fn must be safe
// for concurrent use: at thousands of connections a single goroutine,
// sharing the cores with the servers' thousands, took seconds. ReceiveConns
// returns nil at the orderly end, once every fn has returned, and an
// error for a malformed stream (it then closes every descriptor it
// received and did not pass to fn).
// It closes the conns channel when it returns; without one (see
// TakeConns) it returns nil at once.
func (h *Handoff) ReceiveConns(fn func(name string, c net.Conn)) error {
	if h == nil || h.conns == nil {
		return nil
	}
	c := h.conns
	h.conns = nil
	defer c.Close()
	if fn == nil {
		return errors.New("upgrade: ReceiveConns: no function to take the connections")
	}
	return receiveConns(c, fn, nil)
}

// receiveConns reads the messages of the conns channel c until its end,
// as ReceiveConns; msg, if set, is told of each header as it is read.
//
// The descriptors of a message come with its first byte, so they are
// queued (fifo) as they arrive, and each header takes as many as it says
// from the head of the queue.
func receiveConns(c *net.UnixConn, fn func(string, net.Conn), msg func(name string, n int)) error {
	var fifo []int
	defer func() { closeFDs(fifo) }()
	// Each message's descriptors become connections on a goroutine of
	// their own, at most receiveWorkers at a time.
	var wg sync.WaitGroup
	defer wg.Wait()
	workers := make(chan struct{}, receiveWorkers)
	var errMu sync.Mutex
	var connErr error
	failed := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return connErr
	}
	buf := make([]byte, 4096)
	oob := make([]byte, rightsSpace(maxConnsPerMessage))
	have := 0
	for {
		n, got, truncated, rerr := readMsg(c, buf[have:], oob)
		fifo = append(fifo, got...)
		if truncated {
			return errors.New("upgrade: receiving connections: descriptors lost in transit (more than one message may carry, or this process may open no more)")
		}
		have += n
		start := 0
		for {
			i := bytes.IndexByte(buf[start:have], '\n')
			if i < 0 {
				break
			}
			line := buf[start : start+i]
			start += i + 1
			name, k, err := parseConnsHeader(line)
			if err != nil {
				return fmt.Errorf("upgrade: receiving connections: %w", err)
			}
			if k > len(fifo) {
				return fmt.Errorf("upgrade: receiving connections: header %q: %s came", line, count(len(fifo), "descriptor"))
			}
			fds := append([]int(nil), fifo[:k]...)
			fifo = fifo[k:]
			if msg != nil {
				msg(name, k)
			}
			if err := failed(); err != nil {
				closeFDs(fds)
				return err
			}
			workers <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-workers; wg.Done() }()
				for j, fd := range fds {
					conn, err := fdConn(fd, name)
					if err != nil {
						closeFDs(fds[j+1:])
						errMu.Lock()
						if connErr == nil {
							connErr = fmt.Errorf("upgrade: receiving connections: %w", err)
						}
						errMu.Unlock()
						return
					}
					fn(name, conn)
				}
			}()
		}
		have = copy(buf, buf[start:have])
		if have >= maxConnsLine {
			return fmt.Errorf("upgrade: receiving connections: %d bytes without a newline", have)
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF) && have > 0:
			return fmt.Errorf("upgrade: receiving connections: the stream ends within a header (%q)", buf[:have])
		case errors.Is(rerr, io.EOF) && len(fifo) > 0:
			return fmt.Errorf("upgrade: receiving connections: the stream ends with %s no header claimed", count(len(fifo), "descriptor"))
		case errors.Is(rerr, io.EOF):
			wg.Wait()
			return failed()
		default:
			return fmt.Errorf("upgrade: receiving connections: %w", rerr)
		}
	}
}

// receiveWorkers is how many messages' connections receiveConns makes at
// once.
const receiveWorkers = 32

// parseConnsHeader reads a message header without its newline:
// "conns <name> <n>", n from 1 to maxConnsPerMessage.
func parseConnsHeader(line []byte) (name string, n int, err error) {
	rest, ok := bytes.CutPrefix(line, []byte(verbConns+" "))
	if !ok {
		return "", 0, fmt.Errorf("header %.64q: want %q", line, "conns <name> <n>")
	}
	nameb, countb, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return "", 0, fmt.Errorf("header %.64q: want %q", line, "conns <name> <n>")
	}
	if err := checkConnName(string(nameb)); err != nil {
		return "", 0, fmt.Errorf("header %.64q: %w", line, err)
	}
	d, ok := decimal(string(countb))
	if !ok || d < 1 || d > maxConnsPerMessage {
		return "", 0, fmt.Errorf("header %.64q: want 1 to %d descriptors", line, maxConnsPerMessage)
	}
	return string(nameb), int(d), nil
}

// fdConn makes a connection of a received descriptor, which it closes.
func fdConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("descriptor for %s: %w", name, err)
	}
	return c, nil
}

// unixConn makes a *net.UnixConn of one end of a socketpair, which it
// closes.
func unixConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%s: not a unix socket", f.Name())
	}
	return uc, nil
}

// connsAcked looks, without waiting, for the new generation's
// acknowledgement on the conns channel c: it wrote it before "accepting",
// so it is queued by the time that line has arrived.
func connsAcked(c *net.UnixConn) (bool, error) {
	b := make([]byte, len(lineConns))
	n := 0
	for n < len(b) {
		m, err := recvNow(c, b[n:])
		if err != nil {
			return false, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	switch string(b[:n]) {
	case lineConns:
		return true, nil
	case "":
		return false, nil
	}
	return false, fmt.Errorf("unexpected acknowledgement %q", b[:n])
}
