package upgrade

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	// ErrDenied is returned by Request when the running generation
	// refused the caller (neither root nor the service's user).
	ErrDenied = errors.New("upgrade: permission denied")
	// ErrStopping is returned by Request when the upgrade was abandoned
	// because the service is stopping.
	ErrStopping = errors.New("upgrade: abandoned, the service is stopping")
)

// ListenControl binds the control socket at path, readable and writable by
// its owner only. A stale socket file (nobody answers on it) is replaced; a
// live one is an error.
func ListenControl(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("upgrade: control socket %q: must be an absolute path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("upgrade: control socket %s: another process is serving on it", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("upgrade: control socket %s: exists and is not a socket", path)
		}
		os.Remove(path)
	}
	ln, err := listenUnixPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("upgrade: control socket: %w", err)
	}
	// The socket file is handed on with the socket: never unlinked here.
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// ServeControl answers reload requests on ln (a unix socket from
// ListenControl or Handoff.Control) until ctx ends or ln is closed. It
// hands ln on to new generations, and closes it when one takes over. Each
// request runs Upgrade with ctx.
func (u *Upgrader) ServeControl(ctx context.Context, ln net.Listener) error {
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		return fmt.Errorf("upgrade: control listener is a %T, want a unix socket", ln)
	}
	f, err := ul.File()
	if err != nil {
		return fmt.Errorf("upgrade: control socket: %w", err)
	}
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		f.Close()
		ln.Close()
		return ErrHandedOver
	}
	u.control, u.controlLn = f, ln
	u.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	// Answers under way are written before ServeControl returns: after a
	// hand-over, the caller waits for it so that the reload command hears
	// the outcome before this generation exits.
	var answers sync.WaitGroup
	defer answers.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("upgrade: control socket: %w", err)
		}
		answers.Add(1)
		go func() {
			defer answers.Done()
			u.answer(ctx, c.(*net.UnixConn))
		}()
	}
}

// answer handles one control connection: one request line, one answer
// line.
func (u *Upgrader) answer(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
	if err != nil {
		fmt.Fprintf(c, "error bad request: %v\n", err)
		return
	}
	c.SetReadDeadline(time.Time{})
	uid, err := peerUID(c)
	if err != nil {
		fmt.Fprintf(c, "error cannot identify the caller: %v\n", err)
		return
	}
	if uid != 0 && uid != os.Geteuid() {
		if u.opts.Logger != nil {
			u.opts.Logger.Warnf("upgrade: control request from uid %d refused", uid)
		}
		fmt.Fprintf(c, "error permission denied: uid %d is neither root nor the service's user\n", uid)
		return
	}
	switch strings.TrimSpace(line) {
	case "reload":
		res, err := u.Upgrade(ctx)
		if err != nil {
			fmt.Fprintf(c, "error %s\n", oneLine(strings.TrimPrefix(err.Error(), "upgrade: ")))
			return
		}
		fmt.Fprintf(c, "ok %d %d\n", res.PID, res.Duration.Microseconds())
	case "pid":
		fmt.Fprintf(c, "ok %d 0\n", os.Getpid())
	default:
		fmt.Fprintf(c, "error unknown request %q: want reload\n", strings.TrimSpace(line))
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// Request asks the generation serving on the control socket at path to
// upgrade, and waits for the outcome: the new main process on success,
// the reason otherwise. ctx bounds the wait.
func Request(ctx context.Context, path string) (Result, error) {
	return request(ctx, path, "reload")
}

// MainPID asks the generation serving on the control socket at path for
// its process id.
func MainPID(ctx context.Context, path string) (int, error) {
	r, err := request(ctx, path, "pid")
	return r.PID, err
}

func request(ctx context.Context, path, verb string) (Result, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Result{}, fmt.Errorf("upgrade: cannot reach the running service at %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	// A write error is not final: the service may have answered (and
	// closed) first, refusing the caller; read what it said.
	_, werr := io.WriteString(c, verb+"\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && werr != nil {
		return Result{}, fmt.Errorf("upgrade: %s: %w", path, werr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("upgrade: no answer from %s: %w", path, context.Cause(ctx))
		}
		return Result{}, fmt.Errorf("upgrade: %s: %w", path, err)
	}
	line = strings.TrimSuffix(line, "\n")
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		if strings.HasPrefix(msg, "permission denied") {
			return Result{}, fmt.Errorf("%w: %s", ErrDenied, strings.TrimPrefix(msg, "permission denied: "))
		}
		if strings.HasPrefix(msg, "canceled") {
			return Result{}, fmt.Errorf("%w: %s", ErrStopping, msg)
		}
		return Result{}, errors.New(msg)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ok" {
		return Result{}, fmt.Errorf("upgrade: unexpected answer %q from %s", line, path)
	}
	pid, err1 := strconv.Atoi(f[1])
	us, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return Result{}, fmt.Errorf("upgrade: unexpected answer %q from %s", line, path)
	}
	return Result{PID: pid, Duration: time.Duration(us) * time.Microsecond}, nil
}

// peerUID is the user id of the process at the other end of c.
func peerUID(c *net.UnixConn) (int, error) {
	sc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var uid int
	var perr error
	err = sc.Control(func(fd uintptr) { uid, perr = peerCredUID(int(fd)) })
	if err != nil {
		return 0, err
	}
	return uid, perr
}
