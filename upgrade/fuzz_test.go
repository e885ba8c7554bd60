package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// countingLogger counts the upgrades that were started.
type countingLogger struct{ starts atomic.Int64 }

func (l *countingLogger) Infof(format string, args ...any) {
	if strings.HasPrefix(fmt.Sprintf(format, args...), "upgrade: starting") {
		l.starts.Add(1)
	}
}

func (l *countingLogger) Warnf(string, ...any) {}

// connPair returns the two ends of a unix stream socketpair as conns.
func connPair(t testing.TB) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1]
}

// askControl sends req on a fresh connection to u.answer and returns the
// whole answer.
func askControl(t testing.TB, u *Upgrader, req []byte) string {
	t.Helper()
	srv, cli := connPair(t)
	defer cli.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.answer(context.Background(), srv)
	}()
	go func() {
		cli.Write(req) // fails once the server has answered a long request
		cli.CloseWrite()
	}()
	cli.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(cli)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	<-done
	return string(got)
}

func newFuzzUpgrader(t testing.TB) (*Upgrader, *countingLogger) {
	t.Helper()
	log := &countingLogger{}
	u, err := New(Options{Path: filepath.Join(t.TempDir(), "no-such-webapp"), Logger: log},
		func(int) (Handover, error) { return Handover{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	return u, log
}

// FuzzControlRequest drives the control socket's server side with any
// bytes: there is always exactly one answer line, "ok …" only for the
// known verbs, and only "reload\n" starts an upgrade.
func FuzzControlRequest(f *testing.F) {
	for _, s := range []string{
		"reload\n", "pid\n", "reload", "", "\n", "reload\r\n", " reload\n", "RELOAD\n",
		"reload\nreload\n", "pid\x00\n", "\xff\xfe\n", strings.Repeat("x", 255) + "\n",
		strings.Repeat("x", 256) + "\n", strings.Repeat("r", 300), "reload" + strings.Repeat(" ", 300) + "\n",
	} {
		f.Add([]byte(s))
	}
	u, log := newFuzzUpgrader(f)
	f.Fuzz(func(t *testing.T, req []byte) {
		before := log.starts.Load()
		got := askControl(t, u, req)
		started := log.starts.Load() - before

		if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
			t.Fatalf("answer to %q = %q, want exactly one line", req, got)
		}
		line := strings.TrimSuffix(got, "\n")
		nl := bytes.IndexByte(req, '\n')
		var want string // a prefix of the answer
		switch {
		case bytes.HasPrefix(req, []byte("reload\n")):
			want = "error cannot start the new binary"
		case bytes.HasPrefix(req, []byte("pid\n")):
			want = fmt.Sprintf("ok %d 0", os.Getpid())
		case nl >= maxRequest || nl < 0 && len(req) > maxRequest:
			want = "error request too long: more than 256 bytes"
		case nl < 0:
			want = "error bad request: "
		default:
			want = "error unknown request "
		}
		if !strings.HasPrefix(line, want) {
			t.Errorf("answer to %q = %q, want it to begin with %q", req, line, want)
		}
		if wantStarts := map[bool]int64{true: 1, false: 0}[bytes.HasPrefix(req, []byte("reload\n"))]; started != wantStarts {
			t.Errorf("request %q started %d upgrades, want %d", req, started, wantStarts)
		}
		// The client reads the same answer the same way.
		res, err := parseAnswer(line, "fuzz")
		if strings.HasPrefix(line, "ok ") != (err == nil) {
			t.Errorf("parseAnswer(%q) = %+v, %v; want success only for ok", line, res, err)
		}
		if err == nil && res.PID != os.Getpid() {
			t.Errorf("parseAnswer(%q) = %+v, want pid %d", line, res, os.Getpid())
		}
	})
}

// FuzzControlAnswer serves any bytes as the answer to Request: the client
// reports success only for a well-formed "ok <pid> <us>" line with a
// positive pid, and otherwise an error with a message.
func FuzzControlAnswer(f *testing.F) {
	for _, s := range []string{
		"ok 42 1500\n", "ok 42 0\n", "ok 0 0\n", "ok -1 5\n", "ok 42\n", "ok 42 1500", "ok  42 1500\n",
		"ok 42 1500 7\n", "ok +42 1\n", "ok 042 1\n", "ok 42 -1\n", "ok 99999999999 1\n", "ok 42 1500\r\n",
		"error permission denied: uid 65534 is neither root nor the service's user\n",
		"error canceled, the service is stopping: context canceled\n", "error \n", "error\n",
		"error new generation (pid 7) exited before it was ready\n", "", "\n", "\x00\xff",
		strings.Repeat("o", 5000),
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	answers := make(chan []byte)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ans := <-answers
			readRequest(c)
			c.Write(ans)
			c.Close()
		}
	}()
	f.Fuzz(func(t *testing.T, ans []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		go func() { answers <- ans }()
		res, err := request(ctx, path, "reload")
		line, _, _ := bytes.Cut(ans, []byte("\n"))
		if err != nil {
			if err.Error() == "" {
				t.Errorf("Request with answer %q: an error without a message", ans)
			}
			if errors.Is(err, ErrDenied) && !bytes.HasPrefix(ans, []byte("error permission denied")) {
				t.Errorf("Request with answer %q = %v: ErrDenied only for a permission denied answer", ans, err)
			}
			return
		}
		if res.PID <= 0 || res.Duration < 0 {
			t.Errorf("Request with answer %q = %+v, want a positive pid and duration", ans, res)
		}
		if canon := fmt.Sprintf("ok %d %d", res.PID, res.Duration.Microseconds()); string(line) != canon || len(line) == len(ans) {
			t.Errorf("Request with answer %q = %+v, success; want success only for %q and a newline", ans, res, canon)
		}
	})
}

// FuzzHandoffReady answers the new generation's "ready" with any bytes:
// Ready succeeds only when the first line is "commit", and fails with
// ErrAborted otherwise.
func FuzzHandoffReady(f *testing.F) {
	for _, s := range []string{"commit\n", "commit", "", "\n", "commit\r\n", "COMMIT\n", " commit\n", "abort\n", "commit \n", "\x00commit\n", "commit\ncommit\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, peer []byte) {
		h, old := handshakePair(t)
		heard := make(chan string, 1)
		go func() {
			defer old.Close()
			buf := make([]byte, len("ready\n"))
			old.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, _ := io.ReadFull(old, buf)
			heard <- string(buf[:n])
			old.Write(peer)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := h.Ready(ctx)
		h.conn.Close() // whether or not Ready left it open for the next step
		if got := <-heard; got != "ready\n" {
			t.Errorf("Ready wrote %q, want %q", got, "ready\n")
		}
		if commit := bytes.HasPrefix(peer, []byte("commit\n")); commit != (err == nil) || err != nil && !errors.Is(err, ErrAborted) {
			t.Errorf("Ready with the answer %q = %v, want nil only for commit and ErrAborted otherwise", peer, err)
		}
	})
}

// handshakePair is a new generation's Handoff and the old generation's
// end of its handshake, a real socketpair.
func handshakePair(t *testing.T) (*Handoff, *os.File) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.SetNonblock(fds[0], true)
	return &Handoff{conn: os.NewFile(uintptr(fds[0]), "handshake")}, os.NewFile(uintptr(fds[1]), "old generation")
}

// FuzzHandoffAccepting plays an old generation that answers the commit
// and then anything: Accepting returns nil only for "main", ErrOrphaned
// when the old generation went away (end of input, even within a line),
// and ErrAborted for any other line.
func FuzzHandoffAccepting(f *testing.F) {
	for _, s := range []string{"main\n", "", "main", "ma", "\n", "MAIN\n", "main \n", "abort\n", "main\nmain\n", "\x00main\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, rest []byte) {
		h, old := handshakePair(t)
		heard := make(chan string, 1)
		go func() {
			defer old.Close()
			old.SetReadDeadline(time.Now().Add(20 * time.Second))
			buf := make([]byte, len(lineReady))
			n, _ := io.ReadFull(old, buf)
			if string(buf[:n]) != lineReady {
				heard <- string(buf[:n])
				return
			}
			old.Write([]byte(lineCommit))
			buf = make([]byte, len(lineAccepting))
			n, _ = io.ReadFull(old, buf)
			heard <- string(buf[:n])
			old.Write(rest)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := h.Ready(ctx); err != nil {
			t.Fatalf("Ready after commit = %v", err)
		}
		err := h.Accepting(ctx)
		if got := <-heard; got != lineAccepting {
			t.Errorf("Accepting wrote %q, want %q", got, lineAccepting)
		}
		line, _, complete := bytes.Cut(rest, []byte("\n"))
		switch {
		case complete && string(line) == "main":
			if err != nil {
				t.Errorf("Accepting with the answer %q = %v, want nil", rest, err)
			}
		case !complete:
			if !errors.Is(err, ErrOrphaned) {
				t.Errorf("Accepting with the answer %q and then the end = %v, want ErrOrphaned", rest, err)
			}
		default:
			if !errors.Is(err, ErrAborted) {
				t.Errorf("Accepting with the answer %q = %v, want ErrAborted", rest, err)
			}
		}
	})
}

// Where FuzzInherited puts the descriptors it offers: far from those of
// the test process.
const (
	fuzzHandshakeFD = 900
	fuzzControlFD   = 901
)

// FuzzInherited sets the hand-over variables to anything: Inherited never
// takes a descriptor the variables do not name as a number of at least 3,
// and takes nothing from a process that is not addressed.
func FuzzInherited(f *testing.F) {
	self, parent := strconv.Itoa(os.Getpid()), strconv.Itoa(os.Getppid())
	hs, ctl := strconv.Itoa(fuzzHandshakeFD), strconv.Itoa(fuzzControlFD)
	for _, s := range [][4]string{
		{hs, ctl, "", self}, {hs, "", parent, ""}, {hs, ctl, "1", "1"}, {"", ctl, parent, self},
		{"2", "", parent, ""}, {"0", "", "", self}, {"-1", "", "", self}, {"x", "", "", self}, {hs, "1", "", self},
		{hs, "y", "", self}, {" " + hs, "", "", self}, {"+900", "", "", self}, {"9999999999999999999999", "", "", self},
		{hs, ctl, "", " " + self}, {hs, ctl, "0", ""}, {hs, hs, "", self},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	dir := f.TempDir()
	vars := []string{envUpgradeFD, envControlFD, envParent, envPID}
	f.Fuzz(func(t *testing.T, fdv, ctlv, parentv, pidv string) {
		for i, v := range []string{fdv, ctlv, parentv, pidv} {
			if strings.IndexByte(v, 0) >= 0 {
				t.Skip("the environment cannot hold NUL")
			}
			os.Setenv(vars[i], v)
		}
		addressed := pidv == self || parentv != "" && parentv == parent
		takes := func(v string, ours int) (n int, ok, safe bool) {
			// Inherited takes plain decimal numbers only (inheritedFDs).
			d, isNum := decimal(v)
			ok = isNum && d >= 3 && d <= math.MaxInt32
			n = int(d)
			return n, ok, !ok || n == ours
		}
		fd, fdOK, fdSafe := takes(fdv, fuzzHandshakeFD)
		_, ctlOK, ctlSafe := takes(ctlv, fuzzControlFD)
		if addressed && fdv != "" && (!fdSafe || fdOK && ctlv != "" && !ctlSafe) {
			// Would take a descriptor of the test process. This also
			// leaves out BATON_CONTROL_FD naming the handshake's own
			// descriptor, which Inherited takes twice (the control
			// listener's Close closes the handshake under it):
			// inheritedFDs refuses it, see FuzzInheritedFDs.
			for _, k := range vars {
				os.Unsetenv(k)
			}
			t.Skip("names a descriptor this test does not own")
		}
		offer(t, dir)

		h, err := Inherited()
		for _, k := range vars {
			if v, ok := os.LookupEnv(k); ok {
				t.Errorf("%s=%q after Inherited, want it unset", k, v)
			}
		}
		for fd := 0; fd < 3; fd++ {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
				t.Fatalf("fd %d closed by Inherited(%q, %q, %q, %q)", fd, fdv, ctlv, parentv, pidv)
			}
		}
		switch {
		case fdv == "" || !addressed:
			if h != nil || !errors.Is(err, ErrNotInherited) {
				t.Errorf("Inherited(%q, %q, %q, %q) = %v, %v; want ErrNotInherited", fdv, ctlv, parentv, pidv, h, err)
			}
		case !fdOK || ctlv != "" && !ctlOK:
			if h != nil || err == nil || errors.Is(err, ErrNotInherited) {
				t.Errorf("Inherited(%q, %q, %q, %q) = %v, %v; want an error for the bad descriptor", fdv, ctlv, parentv, pidv, h, err)
			}
		default:
			if err != nil || h == nil {
				t.Fatalf("Inherited(%q, %q, %q, %q) = %v, %v; want the offered descriptors", fdv, ctlv, parentv, pidv, h, err)
			}
			if got := int(h.conn.Fd()); got != fd {
				t.Errorf("Inherited(%q, …) took fd %d, want %d", fdv, got, fd)
			}
			if (h.control != nil) != (ctlv != "") {
				t.Errorf("Inherited(…, %q, …) control = %v, want one only when named", ctlv, h.control)
			}
			h.conn.Close()
			if h.control != nil {
				h.control.Close()
			}
		}
		// Whatever Inherited left of the offer, it must not be mistaken
		// for the next input's.
		unix.Close(fuzzHandshakeFD)
		unix.Close(fuzzControlFD)
	})
}

// offer puts one end of a fresh socketpair at fuzzHandshakeFD and a
// listening unix socket at fuzzControlFD.
func offer(t *testing.T, dir string) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "c.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lf, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Dup3(fds[1], fuzzHandshakeFD, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup3(int(lf.Fd()), fuzzControlFD, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// FuzzInheritedFDs checks the pure reading of the hand-over variables:
// a descriptor is only ever a plain decimal number of at least 3, the
// control socket is never the handshake's descriptor, and a process the
// variables do not address takes nothing.
func FuzzInheritedFDs(f *testing.F) {
	const pid, ppid = 100, 50
	for _, s := range [][4]string{
		{"9", "10", "", "100"}, {"9", "", "50", ""}, {"9", "9", "", "100"}, {"9", "10", "49", "101"},
		{"", "10", "50", "100"}, {"2", "", "50", ""}, {"+9", "", "50", ""}, {"09", "", "50", ""},
		{"9", "x", "50", ""}, {"9", "10", "", " 100"}, {"2147483648", "", "50", ""}, {"9", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, fdv, ctlv, parentv, pidv string) {
		env := map[string]string{envUpgradeFD: fdv, envControlFD: ctlv, envParent: parentv, envPID: pidv}
		lookup := func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		}
		hs, ctl, err := inheritedFDs(lookup, pid, ppid)
		addressed := fdv != "" && (pidv == "100" || parentv == "50")
		if !addressed {
			if !errors.Is(err, ErrNotInherited) {
				t.Errorf("inheritedFDs(%q) = %d, %d, %v; want ErrNotInherited", env, hs, ctl, err)
			}
			return
		}
		if err != nil {
			if errors.Is(err, ErrNotInherited) || hs != -1 || ctl != -1 || !strings.HasPrefix(err.Error(), "upgrade: ") {
				t.Errorf("inheritedFDs(%q) = %d, %d, %v; want -1, -1 and an error for the bad value", env, hs, ctl, err)
			}
			return
		}
		if hs < 3 || strconv.Itoa(hs) != fdv {
			t.Errorf("inheritedFDs(%q) handshake fd %d, want %s=%q as a number of at least 3", env, hs, envUpgradeFD, fdv)
		}
		if ctlv == "" && ctl != -1 || ctlv != "" && (ctl < 3 || ctl == hs || strconv.Itoa(ctl) != ctlv) {
			t.Errorf("inheritedFDs(%q) control fd %d, want %s=%q as a number of at least 3, not the handshake's", env, ctl, envControlFD, ctlv)
		}
	})
}
