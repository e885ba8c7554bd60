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
	return askControlFDs(t, u, req, nil)
}

// askControlFDs is askControl with the descriptors fds passed in the
// same message as req (SCM_RIGHTS).
func askControlFDs(t testing.TB, u *Upgrader, req []byte, fds []int) string {
	t.Helper()
	srv, cli := connPair(t)
	defer cli.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.answer(context.Background(), srv)
	}()
	go func() {
		// Fails once the server has answered a long request.
		if len(fds) > 0 {
			cli.WriteMsgUnix(req, syscall.UnixRights(fds...), nil)
		} else {
			cli.Write(req)
		}
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
// bytes, carrying up to 17 descriptors of regular files, the last one
// perhaps a directory: there is always exactly one answer line, "ok …"
// only for the known verbs, only a well-formed reload request with one
// regular file for each name starts an upgrade, and no descriptor stays
// open in the server, whatever the request.
func FuzzControlRequest(f *testing.F) {
	for _, s := range []struct {
		req string
		n   uint8
		dir bool
	}{
		{"reload\n", 0, false}, {"pid\n", 0, false}, {"reload", 0, false}, {"", 0, false}, {"\n", 0, false},
		{"reload\r\n", 0, false}, {" reload\n", 0, false}, {"RELOAD\n", 0, false}, {"reload\nreload\n", 0, false},
		{"pid\x00\n", 0, false}, {"\xff\xfe\n", 0, false}, {strings.Repeat("x", maxRequest-1) + "\n", 0, false},
		{strings.Repeat("x", maxRequest) + "\n", 0, false}, {strings.Repeat("r", 5000), 0, false},
		{"reload" + strings.Repeat(" ", 5000) + "\n", 0, false},
		{"reload tls.crt:tls.key\n", 2, false}, {"reload tls.crt:tls.key\n", 0, false}, {"reload tls.crt:tls.key\n", 1, false},
		{"reload\n", 2, false}, {"pid\n", 1, false}, {"reload tls.crt:tls.key\n", 2, true}, {"reload a\n", 17, false},
		{"reload a:a\n", 2, false}, {"reload a:\n", 1, false}, {"reload :a\n", 1, false}, {"reload \n", 0, false},
		{"reload a b\n", 1, false}, {"reload a\x7f\n", 1, false}, {"restart x\n", 1, false}, {"reload a", 1, false},
		{"", 3, false}, {"reload " + strings.Repeat("n", 256) + "\n", 1, false},
		{"reload " + strings.Repeat("n", 255) + "\n", 1, false},
		{"reload a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p\n", 16, false}, {"reload a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p:q\n", 16, false},
	} {
		f.Add([]byte(s.req), s.n, s.dir)
	}
	u, log := newFuzzUpgrader(f)
	// Regular files to pass, and a directory.
	dir := f.TempDir()
	var regular []int
	for i := range maxFiles + 1 {
		rf, err := os.Create(filepath.Join(dir, fmt.Sprintf("file%d", i)))
		if err != nil {
			f.Fatal(err)
		}
		defer rf.Close()
		regular = append(regular, int(rf.Fd()))
	}
	df, err := os.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer df.Close()
	askControl(f, u, []byte("pid\n")) // the poller's own descriptors, once
	f.Fuzz(func(t *testing.T, req []byte, n uint8, withDir bool) {
		fds := append([]int(nil), regular[:int(n)%(maxFiles+2)]...)
		if withDir && len(fds) > 0 {
			fds[len(fds)-1] = int(df.Fd())
		}
		if len(req) == 0 && len(fds) > 0 {
			req = []byte{0} // what the kernel gets: descriptors go with a byte
		}
		open := openFDs(t)
		before := log.starts.Load()
		got := askControlFDs(t, u, req, fds)
		started := log.starts.Load() - before
		if now := openFDs(t); now != open {
			t.Errorf("request %q with %d descriptors: %d descriptors open after it, %d before", req, len(fds), now, open)
		}

		if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
			t.Fatalf("answer to %q = %q, want exactly one line", req, got)
		}
		line := strings.TrimSuffix(got, "\n")
		want, starts := expectAnswer(req, len(fds), withDir)
		if !strings.HasPrefix(line, want) {
			t.Errorf("answer to %q with %d descriptors (directory %v) = %q, want it to begin with %q", req, len(fds), withDir, line, want)
		}
		if wantStarts := map[bool]int64{true: 1, false: 0}[starts]; started != wantStarts {
			t.Errorf("request %q with %d descriptors started %d upgrades, want %d", req, len(fds), started, wantStarts)
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

// expectAnswer is the beginning of the answer to req carrying n
// descriptors of regular files, the last a directory if withDir, from a
// service whose new binary cannot start; and whether the request starts
// an upgrade. It models the grammar of the package documentation
// independently of parseRequest.
func expectAnswer(req []byte, n int, withDir bool) (string, bool) {
	nl := bytes.IndexByte(req, '\n')
	switch {
	case n > maxFiles:
		return "error bad request: more than 16 descriptors", false
	case nl >= maxRequest || nl < 0 && len(req) > maxRequest:
		return fmt.Sprintf("error request too long: more than %d bytes", maxRequest), false
	case nl < 0:
		return "error bad request: ", false
	}
	line := string(req[:nl])
	var names []string
	switch {
	case line == "pid" && n == 0:
		return fmt.Sprintf("ok %d 0", os.Getpid()), false
	case line == "status" && n == 0:
		return "error this service answers no status requests", false
	case line == "pid" || line == "reload" || line == "status":
	case strings.HasPrefix(line, "reload "):
		names = strings.Split(line[len("reload "):], ":")
		seen := map[string]bool{}
		for _, name := range names {
			printable := name != "" && len(name) <= 255
			for _, c := range []byte(name) {
				printable = printable && '!' <= c && c <= '~' && c != ':'
			}
			if !printable || seen[name] || len(names) > 16 {
				return "error bad request: ", false
			}
			seen[name] = true
		}
	default:
		return "error unknown request ", false
	}
	switch {
	case n != len(names):
		return "error bad request: it names ", false
	case withDir && n > 0:
		return fmt.Sprintf("error bad request: file %s: not a regular file (a directory)", names[n-1]), false
	}
	return "error cannot start the new binary", true
}

// openFDs counts the descriptors open in this process.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// FuzzParseRequest reads any line as a request: it is accepted only in
// the one spelling Request writes (reloadLine gives it back), with at
// most 16 distinct names of printable ASCII without ':' or space, and
// refused otherwise with an answer that is one line.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"reload", "pid", "reload tls.crt:tls.key", "reload ", "reload  a", "reload a:", "reload :a", "reload a::b",
		"reload a:a", "reload a b", "reload a\tb", "reload a\nb", "reload é", "reload a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p",
		"reload a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p:q", "reload " + strings.Repeat("n", 255), "reload " + strings.Repeat("n", 256),
		"pid a", "status", "status a", "reload\x00", "RELOAD a", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		verb, names, err := parseRequest(line)
		if err != nil {
			if verb != "" || names != nil || strings.Contains(err.Error(), "\n") {
				t.Errorf("parseRequest(%q) = %q, %q, %v; want nothing and a one-line error", line, verb, names, err)
			}
			if !strings.HasPrefix(err.Error(), "bad request: ") && !strings.HasPrefix(err.Error(), "unknown request ") {
				t.Errorf("parseRequest(%q) error %q, want bad request or unknown request", line, err)
			}
			return
		}
		switch verb {
		case verbPID, verbStatus:
			if line != verb || names != nil {
				t.Errorf("parseRequest(%q) = %q, %q; want %s only for %q", line, verb, names, verb, verb)
			}
			return
		case verbReload:
		default:
			t.Fatalf("parseRequest(%q) = verb %q", line, verb)
		}
		if got := reloadLine(names); got != line {
			t.Errorf("parseRequest(%q) = %q, written back as %q", line, names, got)
		}
		if len(names) > maxFiles {
			t.Errorf("parseRequest(%q) = %d names, want at most %d", line, len(names), maxFiles)
		}
		seen := map[string]bool{}
		for _, name := range names {
			if name == "" || len(name) > maxFileName || strings.ContainsAny(name, ": ") || seen[name] {
				t.Errorf("parseRequest(%q) took name %q", line, name)
			}
			for _, c := range []byte(name) {
				if c < '!' || c > '~' {
					t.Errorf("parseRequest(%q) took name %q with byte %#x", line, name, c)
				}
			}
			seen[name] = true
		}
	})
}

// FuzzInheritedFiles reads any BATON_FILES and BATON_FILES_FD: the files
// are taken only as valid names at consecutive descriptors from a plain
// decimal number of at least 3, never over the handshake's or the control
// socket's descriptor.
func FuzzInheritedFiles(f *testing.F) {
	const hs, ctl = 9, 10
	for _, s := range [][2]string{
		{"tls.crt:tls.key", "4"}, {"", ""}, {"a", ""}, {"", "4"}, {"a:b", "8"}, {"a", "10"}, {"a", "11"}, {"a:a", "4"},
		{"a", "+4"}, {"a", "2"}, {"a:b", "2147483647"}, {"a b", "4"}, {"a:", "4"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, namesv, fdv string) {
		env := map[string]string{envFiles: namesv, envFilesFD: fdv}
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		names, first, err := inheritedFiles(lookup, hs, ctl)
		if err != nil {
			if names != nil || first != -1 || !strings.HasPrefix(err.Error(), "upgrade: ") {
				t.Errorf("inheritedFiles(%q, %q) = %q, %d, %v; want nothing and an error", namesv, fdv, names, first, err)
			}
			return
		}
		if namesv == "" && fdv == "" {
			if names != nil || first != -1 {
				t.Errorf("inheritedFiles(none) = %q, %d; want nil, -1", names, first)
			}
			return
		}
		if strings.Join(names, ":") != namesv || strconv.Itoa(first) != fdv || first < 3 {
			t.Errorf("inheritedFiles(%q, %q) = %q, %d; want the names and a descriptor of at least 3 as given", namesv, fdv, names, first)
		}
		if err := checkFileNames(names); err != nil {
			t.Errorf("inheritedFiles(%q, %q) took names %q: %v", namesv, fdv, names, err)
		}
		if last := int64(first) + int64(len(names)) - 1; hs >= first && hs <= last || ctl >= first && ctl <= last || last > math.MaxInt32 {
			t.Errorf("inheritedFiles(%q, %q) = descriptors %d to %d, over the handshake's %d or the control socket's %d", namesv, fdv, first, last, hs, ctl)
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
			_, fds, _ := readRequest(c.(*net.UnixConn))
			closeFDs(fds)
			c.Write(ans)
			c.Close()
		}
	}()
	f.Fuzz(func(t *testing.T, ans []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		go func() { answers <- ans }()
		res, err := request(ctx, path, "reload", nil)
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

// FuzzInherited sets the hand-over variables to anything: Inherited
// (without its cache: inherit) never takes a descriptor the variables do
// not name as a number of at least 3, and takes nothing from a process
// that is not addressed.
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

		h, err := inherit()
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
