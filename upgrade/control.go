package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	// ErrDenied is returned by Request when the caller is neither root
	// nor the service's user: the control socket's mode kept it out, or
	// the running generation refused it.
	ErrDenied = errors.New("upgrade: permission denied")
	// ErrStopping is returned by Request when the upgrade was abandoned
	// because the service is stopping.
	ErrStopping = errors.New("upgrade: abandoned, the service is stopping")
	// ErrBusy is returned by Request for a reload that carries files
	// while another upgrade is under way: the new generation that one
	// starts would not get them. Reload again once it is done.
	ErrBusy = errors.New("upgrade: another upgrade is under way")
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
	// A temporary accept error (out of descriptors, say) is waited out
	// with a backoff, and logged once per burst: the control socket must
	// work again once the service has descriptors again.
	delay, fails := time.Duration(0), 0
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !temporaryAccept(err) {
				return fmt.Errorf("upgrade: control socket: %w", err)
			}
			if fails++; fails == 1 && u.opts.Logger != nil {
				u.opts.Logger.Warnf("upgrade: control socket: %v; retrying", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if fails > 0 {
			u.logf("upgrade: control socket accepts again after %d failed accepts", fails)
			delay, fails = 0, 0
		}
		answers.Add(1)
		go func() {
			defer answers.Done()
			u.answer(ctx, c.(*net.UnixConn))
		}()
	}
}

// The control protocol: one request line, one answer line.
const (
	// maxRequest bounds a request line, newline included: room for
	// "reload " and maxFiles names of maxFileName bytes, each followed by
	// ':' or, for the last, the newline.
	maxRequest = len(verbReload+" ") + maxFiles*(maxFileName+1)
	// requestTimeout bounds the wait for the request line.
	requestTimeout = 10 * time.Second
	// maxAnswer bounds an answer line, newline included.
	maxAnswer = 4096
)

// answer handles one control connection: one request line, one answer
// line. The caller's credentials are checked before anything is read, and
// a request that is not exactly a known verb and a newline gets an error
// line and changes nothing.
func (u *Upgrader) answer(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	fmt.Fprintf(c, "%s\n", u.reply(ctx, c))
}

// reply is the answer line to the request on c, without its newline.
// Every descriptor the request carried is closed before reply returns:
// when it is refused at once, and when it was handed to a new generation,
// once the upgrade is over.
func (u *Upgrader) reply(ctx context.Context, c *net.UnixConn) string {
	uid, err := peerUID(c)
	if err != nil {
		return "error cannot identify the caller: " + oneLine(err.Error())
	}
	if uid != 0 && uid != os.Geteuid() {
		if u.opts.Logger != nil {
			u.opts.Logger.Warnf("upgrade: control request from uid %d refused", uid)
		}
		return fmt.Sprintf("error permission denied: uid %d is neither root nor the service's user", uid)
	}
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	line, fds, err := readRequest(c)
	defer func() { closeFDs(fds) }() // those not taken as files
	var verb string
	var names []string
	if err == nil {
		c.SetReadDeadline(time.Time{})
		verb, names, err = parseRequest(line)
	}
	if err == nil && len(fds) != len(names) {
		err = fmt.Errorf("bad request: it names %s but carries %s", count(len(names), "file"), count(len(fds), "descriptor"))
	}
	var files []File
	if err == nil && len(fds) > 0 {
		files, err = takeFiles(names, fds)
		fds = nil
		defer closeFiles(files)
	}
	if err != nil {
		if u.opts.Logger != nil {
			u.opts.Logger.Warnf("upgrade: control request refused: %v", err)
		}
		return "error " + err.Error()
	}
	switch verb {
	case verbPID:
		return fmt.Sprintf("ok %d 0", os.Getpid())
	case verbStatus:
		if u.opts.Status == nil {
			return "error this service answers no status requests"
		}
		return "status " + oneLine(u.opts.Status())
	}
	if stopping := u.opts.Stopping; stopping != nil {
		select {
		case <-stopping:
			return "error canceled: the service is stopping"
		default:
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-stopping:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	if len(files) > 0 {
		u.logf("upgrade: reload request with files %s", strings.Join(names, ", "))
	}
	res, err := u.upgrade(ctx, files)
	if err != nil {
		return "error " + oneLine(strings.TrimPrefix(err.Error(), "upgrade: "))
	}
	return fmt.Sprintf("ok %d %d", res.PID, res.Duration.Microseconds())
}

// count is "no <what>s", "1 <what>" or "<n> <what>s".
func count(n int, what string) string {
	switch n {
	case 0:
		return "no " + what + "s"
	case 1:
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// takeFiles makes files of the descriptors a reload request carried, one
// for each name, and checks that each is a regular file. On error it
// returns the files it made, for the caller to close with the rest of
// fds; on success every descriptor is in a file.
func takeFiles(names []string, fds []int) ([]File, error) {
	files := make([]File, 0, len(fds))
	for i, fd := range fds {
		files = append(files, File{Name: names[i], File: os.NewFile(uintptr(fd), names[i])})
	}
	for _, f := range files {
		fi, err := f.File.Stat()
		if err != nil {
			return files, fmt.Errorf("bad request: file %s: %s", f.Name, oneLine(err.Error()))
		}
		if !fi.Mode().IsRegular() {
			return files, fmt.Errorf("bad request: file %s: not a regular file (%s)", f.Name, kind(fi.Mode()))
		}
	}
	return files, nil
}

// readRequest reads one request line from c and returns it without its
// newline, with the descriptors that came with it (SCM_RIGHTS), which the
// caller closes, also with an error. The errors are meant for the answer
// line.
func readRequest(c *net.UnixConn) (string, []int, error) {
	buf := make([]byte, maxRequest+1)
	// Room for as many descriptors as a request may carry: the kernel
	// closes those that do not fit, and says so (MSG_CTRUNC).
	oob := make([]byte, rightsSpace(maxFiles))
	var fds []int
	n := 0
	for n < len(buf) {
		m, got, truncated, err := readMsg(c, buf[n:], oob)
		fds = append(fds, got...)
		if truncated || len(fds) > maxFiles {
			return "", fds, fmt.Errorf("bad request: more than %d descriptors", maxFiles)
		}
		if i := bytes.IndexByte(buf[n:n+m], '\n'); i >= 0 {
			if n+i >= maxRequest {
				break
			}
			return string(buf[:n+i]), fds, nil
		}
		n += m
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return "", fds, fmt.Errorf("bad request: no request line within %v", requestTimeout)
		case errors.Is(err, io.EOF) && n == 0:
			return "", fds, errors.New("bad request: empty")
		case errors.Is(err, io.EOF):
			return "", fds, fmt.Errorf("bad request: %d bytes without a newline", n)
		case err != nil:
			return "", fds, fmt.Errorf("bad request: %s", oneLine(err.Error()))
		}
	}
	return "", fds, fmt.Errorf("request too long: more than %d bytes", maxRequest)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// Request asks the generation serving on the control socket at path to
// upgrade, and waits for the outcome: the new main process on success,
// the reason otherwise. ctx bounds the wait.
//
// files, if any, go to the new generation that this request starts
// (Handoff.Files), such as a rotated certificate and key that a reload
// command run as root (ExecReload=+) can read and the service's user
// cannot. At most 16 may be passed, each an open regular file under a
// distinct name of 1 to 255 printable ASCII characters without ':' or
// space; anything else is an error before anything is sent. The request
// line names them in order ("reload tls.crt:tls.key") and carries their
// descriptors in the same message (SCM_RIGHTS). The running generation
// keeps no copy once the upgrade is over. A request with files that
// arrives while another upgrade is under way is refused with ErrBusy:
// the new generation that one starts would not get them. The caller
// keeps its files, to close.
//
// When the generation it asked goes away before it answers (it was
// killed, or crashed), whether the swap happened is up to who serves the
// control socket now: Request asks, for a few seconds, and reports
// success only if another process answers. It gives up at once when no
// process holds the socket any more: systemd then restarts the service,
// and waits for the reload command before it does.
func Request(ctx context.Context, path string, files ...File) (Result, error) {
	if err := checkFiles(files); err != nil {
		return Result{}, err
	}
	before, _ := MainPID(ctx, path)
	res, err := request(ctx, path, reloadLine(fileNames(files)), files)
	if err == nil || before == 0 || !isGone(err) || ctx.Err() != nil {
		return res, err
	}
	return afterBroken(ctx, path, before, err)
}

// temporaryAccept reports whether an accept error passes: out of
// descriptors, buffers or memory, or a connection aborted before it was
// taken.
func temporaryAccept(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// afterBroken asks the control socket at path, for a few seconds, which
// process serves it now; before is the one that broke the connection
// with err.
func afterBroken(ctx context.Context, path string, before int, err error) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	refused := 0
	for {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		pid, perr := MainPID(actx, path)
		acancel()
		switch {
		case perr == nil && pid != before:
			return Result{PID: pid}, nil
		case perr == nil:
			return Result{}, fmt.Errorf("%w (pid %d still serves)", err, pid)
		case errors.Is(perr, syscall.ECONNREFUSED) || errors.Is(perr, os.ErrNotExist):
			if refused++; refused == 3 {
				return Result{}, fmt.Errorf("%w (pid %d went away, and no process holds %s)", err, before, path)
			}
		default:
			refused = 0
		}
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w (pid %d went away, and nothing answers on %s)", err, before, path)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// MainPID asks the generation serving on the control socket at path for
// its process id.
func MainPID(ctx context.Context, path string) (int, error) {
	r, err := request(ctx, path, verbPID, nil)
	return r.PID, err
}

// RequestStatus asks the generation serving on the control socket at path
// for its status line (Options.Status).
func RequestStatus(ctx context.Context, path string) (string, error) {
	line, err := requestLine(ctx, path, verbStatus, nil)
	if err != nil {
		return "", err
	}
	if st, ok := strings.CutPrefix(line, "status "); ok {
		return st, nil
	}
	if _, err := parseAnswer(line, path); err != nil {
		return "", err
	}
	return "", fmt.Errorf("upgrade: unexpected answer %.80q from %s", line, path)
}

// request sends the request line req (without its newline) to the
// control socket at path, with the descriptors of files, and reads the
// answer.
func request(ctx context.Context, path, req string, files []File) (Result, error) {
	line, err := requestLine(ctx, path, req, files)
	if err != nil {
		return Result{}, err
	}
	return parseAnswer(line, path)
}

// requestLine is request up to the answer line, without its newline.
func requestLine(ctx context.Context, path, req string, files []File) (string, error) {
	fds, err := rawFDs(files)
	if err != nil {
		return "", err
	}
	// The descriptors are in use until they are sent.
	defer runtime.KeepAlive(files)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if errors.Is(err, os.ErrPermission) {
		// The socket file's mode let only the service's user in.
		return "", fmt.Errorf("%w: cannot connect to %s (run as root or as the service's user): %w", ErrDenied, path, err)
	}
	if err != nil {
		return "", fmt.Errorf("upgrade: cannot reach the running service at %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	// A write error is not final: the service may have answered (and
	// closed) first, refusing the caller; read what it said.
	werr := writeMsg(c.(*net.UnixConn), []byte(req+"\n"), fds)
	line, err := bufio.NewReader(io.LimitReader(c, maxAnswer)).ReadString('\n')
	if err == io.EOF && len(line) == maxAnswer {
		return "", fmt.Errorf("upgrade: unexpected answer from %s: more than %d bytes without a newline", path, maxAnswer)
	}
	if err != nil && werr != nil {
		return "", fmt.Errorf("upgrade: %s: %w", path, werr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("upgrade: no answer from %s: %w", path, context.Cause(ctx))
		}
		return "", fmt.Errorf("upgrade: %s: %w", path, err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// parseAnswer reads the answer line (without its newline) of the service
// at path: "ok <pid> <microseconds>" with a positive pid, or
// "error <reason>". Anything else is an error.
func parseAnswer(line, path string) (Result, error) {
	if msg, ok := strings.CutPrefix(line, "error "); ok && strings.TrimSpace(msg) != "" {
		if strings.HasPrefix(msg, "permission denied") {
			return Result{}, fmt.Errorf("%w: %s", ErrDenied, strings.TrimPrefix(msg, "permission denied: "))
		}
		if strings.HasPrefix(msg, "canceled") {
			return Result{}, fmt.Errorf("%w: %s", ErrStopping, msg)
		}
		if rest, ok := strings.CutPrefix(msg, "another upgrade is under way: "); ok {
			return Result{}, fmt.Errorf("%w: %s", ErrBusy, rest)
		}
		return Result{}, errors.New(msg)
	}
	bad := fmt.Errorf("upgrade: unexpected answer %.80q from %s", line, path)
	rest, ok := strings.CutPrefix(line, "ok ")
	if !ok {
		return Result{}, bad
	}
	pidv, usv, ok := strings.Cut(rest, " ")
	pid, ok1 := decimal(pidv)
	us, ok2 := decimal(usv)
	if !ok || !ok1 || !ok2 || pid == 0 || pid > math.MaxInt32 || us > math.MaxInt64/int64(time.Microsecond) {
		return Result{}, bad
	}
	return Result{PID: int(pid), Duration: time.Duration(us) * time.Microsecond}, nil
}

// decimal parses a non-negative decimal number written without sign or
// leading zeros.
func decimal(s string) (int64, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// rawFDs are the descriptors of files.
func rawFDs(files []File) ([]int, error) {
	fds := make([]int, len(files))
	for i, f := range files {
		sc, err := f.File.SyscallConn()
		if err == nil {
			err = sc.Control(func(fd uintptr) { fds[i] = int(fd) })
		}
		if err != nil {
			return nil, fmt.Errorf("upgrade: cannot pass file %q: %w", f.Name, err)
		}
	}
	return fds, nil
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
