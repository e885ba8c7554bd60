package upgrade

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// The handshake lines, in the order they are sent (see the package
// documentation).
const (
	lineReady     = "ready\n"     // new: healthy, accepting nothing yet
	lineCommit    = "commit\n"    // old: start accepting
	lineAccepting = "accepting\n" // new: accepting
	lineMain      = "main\n"      // old: systemd knows you as the main process
)

// maxHandshake bounds what the old generation reads from the new one over
// the whole handshake.
const maxHandshake = 4096

var (
	errExited  = errors.New("exited")
	errTimeout = errors.New("timed out")
)

// peer is the old generation's view of the new one during a hand-over:
// its process, watched through a pidfd, and its end of the handshake.
type peer struct {
	proc     *process
	conn     *os.File
	exitedCh chan struct{}
	lines    chan line
	done     chan struct{}
}

type line struct {
	s   string
	err error
}

func newPeer(proc *process, conn *os.File) *peer {
	p := &peer{proc: proc, conn: conn, exitedCh: make(chan struct{}), lines: make(chan line, 1), done: make(chan struct{})}
	go func() {
		proc.Wait()
		close(p.exitedCh)
	}()
	go func() {
		br := bufio.NewReader(io.LimitReader(conn, maxHandshake))
		for {
			s, err := br.ReadString('\n')
			select {
			case p.lines <- line{s, err}:
			case <-p.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// close stops the reader; the caller closes the connection and process.
func (p *peer) close() { close(p.done) }

func (p *peer) send(s string) error {
	_, err := io.WriteString(p.conn, s)
	return err
}

func (p *peer) exited() bool {
	select {
	case <-p.exitedCh:
		return true
	default:
		return false
	}
}

func (p *peer) exitedWithin(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exitedCh:
		return true
	case <-t.C:
		return false
	}
}

// next returns the next handshake line. Its errors: errExited when the
// process ended first, errTimeout at the deadline, ctx's error, or the
// read error. A line that arrived is preferred to an expired deadline:
// when this process was stopped (SIGSTOP) and resumed, its timers have
// all run out at once, and the peer deserves a last look.
func (p *peer) next(ctx context.Context, deadline time.Time) (string, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case l := <-p.lines:
		return l.s, l.err
	case <-p.exitedCh:
		// What it wrote before it exited is of no use now.
		return "", errExited
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
		last := time.NewTimer(500 * time.Millisecond)
		defer last.Stop()
		select {
		case l := <-p.lines:
			return l.s, l.err
		case <-p.exitedCh:
			return "", errExited
		case <-last.C:
			return "", errTimeout
		}
	}
}

// abort kills the new generation (it may be stopped: SIGKILL still ends
// it), waits a moment for it to be gone, and returns why.
func (p *peer) abort(why error) (int, error) {
	p.proc.Kill()
	p.exitedWithin(5 * time.Second)
	return 0, why
}
