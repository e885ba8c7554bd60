package upgrade

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Handoff is the new generation's side of the handshake. A nil *Handoff
// (a process started afresh) is valid: Ready returns nil at once,
// Control and Files return nil, TakeConns returns ErrNoConns and
// ReceiveConns nil.
type Handoff struct {
	conn    *os.File
	r       *bufio.Reader
	control net.Listener
	files   []File
	// conns is the conns channel, nil without one or once ReceiveConns
	// has begun.
	conns      *net.UnixConn
	connsTaken bool // TakeConns wrote the acknowledgement
	accepted   bool // Accepting was called
}

// inherited is the outcome of the one reading of the hand-over variables
// in this process: the descriptors they name can be taken once only, and
// the variables are unset by then.
var inherited struct {
	once sync.Once
	h    *Handoff
	err  error
}

// Inherited reads the handshake descriptors a previous generation passed
// (BATON_UPGRADE_FD, BATON_CONTROL_FD, BATON_UPGRADE_PID,
// BATON_UPGRADE_PARENT, BATON_CONNS_FD) and the files a reload request
// passed (BATON_FILES, BATON_FILES_FD), and unsets those variables. It
// returns ErrNotInherited when the process was not started by a previous
// generation; the variables naming another parent (a grandchild that
// inherited them) count as not inherited.
//
// Only the first call reads the environment; every later call returns
// the same *Handoff and error, so that the service's own code (to read a
// passed certificate before it builds its servers) and the kit's entry
// point can both call it. Ready and Accepting belong to one of them, the
// entry point.
func Inherited() (*Handoff, error) {
	inherited.once.Do(func() { inherited.h, inherited.err = inherit() })
	return inherited.h, inherited.err
}

// inherit is Inherited without the cache.
func inherit() (*Handoff, error) {
	env := map[string]string{}
	for _, k := range []string{envUpgradeFD, envControlFD, envParent, envPID, envFiles, envFilesFD, envConnsFD} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
		os.Unsetenv(k)
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	// Ours if BATON_UPGRADE_PID is this process (set by the intermediate
	// shell just before exec) or BATON_UPGRADE_PARENT our parent.
	fd, cfd, err := inheritedFDs(lookup, os.Getpid(), os.Getppid())
	if err != nil {
		return nil, err
	}
	names, first, err := inheritedFiles(lookup, fd, cfd)
	if err != nil {
		return nil, err
	}
	connsFD, err := inheritedConnsFD(lookup, fd, cfd, first, len(names))
	if err != nil {
		return nil, err
	}
	// Non-blocking, so that the file is pollable and deadlines work.
	markCloseOnExec(fd)
	setNonblock(fd)
	h := &Handoff{conn: os.NewFile(uintptr(fd), "upgrade-handshake")}
	for i, name := range names {
		markCloseOnExec(first + i)
		h.files = append(h.files, File{Name: name, File: os.NewFile(uintptr(first+i), name)})
	}
	if cfd >= 0 {
		markCloseOnExec(cfd)
		f := os.NewFile(uintptr(cfd), "control")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			h.conn.Close()
			closeFiles(h.files)
			return nil, fmt.Errorf("upgrade: inherited control socket (fd %d): %w", cfd, err)
		}
		h.control = ln
	}
	if connsFD >= 0 {
		markCloseOnExec(connsFD)
		c, err := unixConn(os.NewFile(uintptr(connsFD), "upgrade-conns"))
		if err != nil {
			h.conn.Close()
			closeFiles(h.files)
			if h.control != nil {
				h.control.Close()
			}
			return nil, fmt.Errorf("upgrade: inherited conns channel (fd %d): %w", connsFD, err)
		}
		h.conns = c
	}
	return h, nil
}

// Control returns the inherited control socket, or nil.
func (h *Handoff) Control() net.Listener {
	if h == nil {
		return nil
	}
	return h.control
}

// Ready tells the old generation that this one is healthy, and waits for
// its commit. When Ready returns nil this process must start accepting and
// then call Accepting. Any other outcome (the old generation gave up or
// went away, or ctx ended) returns an error wrapping ErrAborted, and this
// process must exit without having accepted a connection.
func (h *Handoff) Ready(ctx context.Context) error {
	if h == nil {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		h.conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { h.conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(h.conn, lineReady); err != nil {
		h.conn.Close()
		return fmt.Errorf("%w: %w", ErrAborted, err)
	}
	h.r = bufio.NewReader(io.LimitReader(h.conn, maxHandshake))
	line, err := h.r.ReadString('\n')
	if err == nil && line != lineCommit {
		err = fmt.Errorf("unexpected handshake %q", line)
	}
	if err != nil {
		h.conn.Close()
		return fmt.Errorf("%w: %w", ErrAborted, err)
	}
	h.conn.SetDeadline(time.Time{})
	return nil
}

// Accepting tells the old generation that this one accepts, and waits
// until the old one has made it the main process (MAINPID=, confirmed by
// systemd): then it returns nil, and this process is the service. It
// returns an error wrapping ErrOrphaned when the old generation went away
// first (it crashed or was killed): this process then announces itself
// as the main process (MAINPID= of its own, READY=1) and goes on serving.
// Other errors (ctx ended, a broken handshake) wrap ErrAborted: this
// process must drain what it accepted and exit. Accepting waits for no
// deadline of its own: while the old generation is stopped (SIGSTOP), this
// one serves and waits, and only ctx ends that.
func (h *Handoff) Accepting(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.accepted = true
	defer h.conn.Close()
	stop := context.AfterFunc(ctx, func() { h.conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(h.conn, lineAccepting); err != nil {
		if ctx.Err() == nil && isGone(err) {
			return fmt.Errorf("%w: %w", ErrOrphaned, err)
		}
		return fmt.Errorf("%w: %w", ErrAborted, err)
	}
	line, err := h.r.ReadString('\n')
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ErrAborted, context.Cause(ctx))
	case err != nil && isGone(err):
		return fmt.Errorf("%w: %w", ErrOrphaned, err)
	case err != nil:
		return fmt.Errorf("%w: %w", ErrAborted, err)
	case line != lineMain:
		return fmt.Errorf("%w: unexpected handshake %q", ErrAborted, line)
	}
	return nil
}

// isGone reports whether err says the other end of a connection (the
// handshake, or a control request) is closed: the process holding it has
// exited.
func isGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}
