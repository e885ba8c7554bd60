//go:build linux

package baton_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/notifytest"
)

// proc is a process of the service under test, watched until it exits.
type proc struct {
	pid  int
	done chan struct{}
	st   *os.ProcessState
}

// watch waits for p in the background, and kills it at the end of the
// test if it is still running.
func watch(t *testing.T, p *os.Process, wait func() (*os.ProcessState, error)) *proc {
	pr := &proc{pid: p.Pid, done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		pr.st, _ = wait()
	}()
	t.Cleanup(func() {
		select {
		case <-pr.done:
			return
		default:
		}
		p.Kill()
		select {
		case <-pr.done:
		case <-time.After(10 * time.Second):
			t.Errorf("pid %d still there 10 s after SIGKILL", p.Pid)
		}
	})
	return pr
}

// exit waits up to timeout for the process to exit and returns its exit
// status; death by a signal fails the test.
func (p *proc) exit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("pid %d still running after %v", p.pid, timeout)
	}
	if p.st == nil {
		t.Fatalf("pid %d: no exit status", p.pid)
	}
	if ws, ok := p.st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("pid %d: %v, want an exit", p.pid, p.st)
	}
	return p.st.ExitCode()
}

// subreaper makes the test process the parent of the service's later
// generations, as systemd is: a reload starts them through a shell that
// exits at once, and they are reparented to the nearest subreaper. The
// test can then wait for them and read their exit status.
func subreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// adopt watches a later generation of the service, reparented to the test.
func adopt(t *testing.T, pid int) *proc {
	t.Helper()
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return watch(t, p, p.Wait)
}

// started is a child of the test binary started as systemd starts a
// socket-activated service.
type started struct {
	*proc
	log string // its stderr (and that of its later generations)
}

// startService runs the test binary as child (see TestMain) the way
// systemd runs a socket-activated service: files from fd 3 on, named by
// LISTEN_FDS and LISTEN_FDNAMES, and LISTEN_PID its own pid. That pid is
// not known before the fork, so a shell exports its own and execs the
// binary, which keeps it. stdin and stdout are nil (/dev/null) or files;
// env is added to the test's environment.
func startService(t *testing.T, child string, names []string, files []*os.File, stdin, stdout *os.File, env ...string) *started {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "stderr")
	stderr, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.Command("/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`, bin)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"="+child)
	if len(files) > 0 {
		cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	// Files, not pipes: later generations inherit stdout and stderr, and
	// Wait would wait for them to close too.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if stdout == nil {
		cmd.Stdout = stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &started{
		proc: watch(t, cmd.Process, func() (*os.ProcessState, error) { err := cmd.Wait(); return cmd.ProcessState, err }),
		log:  logPath,
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("service log:\n%s", b)
		}
	})
	return s
}

// tcpSocket is a listening socket held by the test, as systemd holds a
// .socket unit's, and a duplicate to pass on.
func tcpSocket(t *testing.T) (addr string, f *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err = ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ln.Addr().String(), f
}

// udpSocket is tcpSocket for a datagram socket.
func udpSocket(t *testing.T) (addr string, f *os.File) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	f, err = pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return pc.LocalAddr().String(), f
}

// get fetches url on a new connection and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

var mainPIDRe = regexp.MustCompile(`^[1-9][0-9]*$`)

// mainPID waits for a MAINPID= from index from on and returns it.
func mainPID(ctx context.Context, sock *notifytest.Socket, from int) (int, int, error) {
	m, i, err := sock.Wait(ctx, from, func(m notifytest.Message) bool { _, ok := m.Get("MAINPID"); return ok })
	if err != nil {
		return 0, 0, err
	}
	v, _ := m.Get("MAINPID")
	if !mainPIDRe.MatchString(v) {
		return 0, 0, fmt.Errorf("MAINPID=%q", v)
	}
	pid, _ := strconv.Atoi(v)
	return pid, i, nil
}

// TestExampleTwoSockets runs ExampleRun_twoSockets as systemd would run it
// with two socket units: it answers on both sockets by name; a SIGHUP
// under load on both swaps in a new process with no failed request; the
// new process answers on both; SIGTERM stops it with exit status 0.
func TestExampleTwoSockets(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	subreaper(t)
	notify := notifytest.Listen(t)
	httpAddr, httpFile := tcpSocket(t)
	adminAddr, adminFile := tcpSocket(t)
	svc := startService(t, "example", []string{"http", "admin"}, []*os.File{httpFile, adminFile}, nil, nil,
		"NOTIFY_SOCKET="+notify.Addr())
	first := svc.pid

	ready, _ := notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	st, _ := ready.Get("STATUS")
	for _, want := range []string{"admin on " + adminAddr, "http on " + httpAddr, "(systemd)", fmt.Sprintf("pid %d", first), "version 1.0.0"} {
		if !strings.Contains(st, want) {
			t.Errorf("STATUS=%q at READY=1, want it to say %q", st, want)
		}
	}
	// Each socket serves its own server: the names were matched.
	answers := func(pid int) {
		t.Helper()
		for _, c := range []struct {
			url, body string
			code      int
		}{
			{"http://" + httpAddr + "/", fmt.Sprintf("hello from pid %d\n", pid), 200},
			{"http://" + adminAddr + "/version", fmt.Sprintf("1.0.0 (pid %d)\n", pid), 200},
			{"http://" + adminAddr + "/healthz", "ok\n", 200},
			{"http://" + httpAddr + "/version", "", 404},
			{"http://" + adminAddr + "/", "", 404},
		} {
			code, body := get(t, c.url)
			if code != c.code || (c.body != "" && body != c.body) {
				t.Errorf("GET %s = %d %q, want %d %q", c.url, code, body, c.code, c.body)
			}
		}
	}
	answers(first)

	// A reload under load on both sockets, each in its own connection
	// mode; the load ends shortly after the old process has drained and
	// exited.
	var newPID int
	reloaded := make(chan struct{})
	swap := func(ctx context.Context, _ int) error {
		defer close(reloaded)
		from := len(notify.Messages())
		if err := syscall.Kill(first, syscall.SIGHUP); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		pid, _, err := mainPID(ctx, notify, from)
		if err != nil {
			return err
		}
		newPID = pid
		select {
		case <-svc.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("the old process %d did not exit after the hand-over: %w", first, ctx.Err())
		}
	}
	afterSwap := func(ctx context.Context, _ int) error {
		select {
		case <-reloaded:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	results := make([]*load.Result, 2)
	var wg sync.WaitGroup
	for i, l := range []struct {
		url  string
		mode load.Mode
		run  func(context.Context, int) error
	}{
		{"http://" + httpAddr + "/", load.KeepAlive, swap},
		{"http://" + adminAddr + "/version", load.NewConnection, afterSwap},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := load.Run(context.Background(), l.url, load.Options{
				Clients:     4,
				Mode:        l.mode,
				Duration:    20 * time.Second,
				MaxRequests: 500_000,
				Schedule:    load.Schedule{Start: 300 * time.Millisecond, Count: 1, Run: l.run},
				Tail:        300 * time.Millisecond,
			})
			if err != nil {
				t.Errorf("load %s: %v", l.url, err)
				return
			}
			results[i] = res
		}()
	}
	wg.Wait()
	for _, res := range results {
		if res == nil {
			t.FailNow()
		}
		for _, ev := range res.Events {
			if ev.Err != nil {
				t.Fatalf("reload: %v", ev.Err)
			}
		}
		t.Logf("%s (%s): %d requests, %d ok, %d failed across the reload", res.URL, res.Mode, res.Requests, res.OK, res.Failed())
		if res.Failed() != 0 || res.OK == 0 {
			t.Errorf("%s (%s): %d of %d requests failed across the reload (%+v; %v), want none of some", res.URL, res.Mode, res.Failed(), res.Requests, res.Failures, res.FailureDetails)
		}
	}
	if code := svc.exit(t, 10*time.Second); code != 0 {
		t.Errorf("the old process exited with %d after the hand-over, want 0", code)
	}
	if newPID == first || newPID <= 0 {
		t.Fatalf("MAINPID=%d after the reload, want a new process", newPID)
	}
	gen := adopt(t, newPID)
	answers(newPID)
	m, _ := notify.WaitFor(t, 0, "MAINPID="+strconv.Itoa(newPID), time.Second)
	if !m.Has("READY=1") {
		t.Errorf("MAINPID=%d came without READY=1: %v", newPID, m)
	}

	from := len(notify.Messages())
	if err := syscall.Kill(newPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.WaitFor(t, from, "STOPPING=1", 10*time.Second)
	if code := gen.exit(t, 15*time.Second); code != 0 {
		t.Errorf("the new process exited with %d on SIGTERM, want 0", code)
	}
}

// TestRunBadPassedSockets gives Run sockets from systemd (LISTEN_FDS, in
// a child) that do not fit what the service declares. Run must refuse to
// start, say which socket and what is wrong, send no READY=1 but a
// "start failed" status, and bind no fallback address.
func TestRunBadPassedSockets(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	for _, c := range []struct {
		name    string
		passed  []string // name/kind of each descriptor passed, kind "tcp" or "udp"
		servers []childServer
		want    []string // in the error
		notWant []string
	}{
		{
			name:   "unexpected name",
			passed: []string{"http/tcp", "extra/tcp"},
			servers: []childServer{
				{Kind: "http", Name: "http"},
			},
			want: []string{`"extra"`, "unexpected name"},
		},
		{
			name:   "datagram where a stream is wanted",
			passed: []string{"http/udp"},
			servers: []childServer{
				{Kind: "http", Name: "http"},
			},
			want: []string{`"http"`, "not a listening stream socket"},
		},
		{
			name:   "stream where a datagram is wanted",
			passed: []string{"udp/tcp"},
			servers: []childServer{
				{Kind: "datagram", Name: "udp", Network: "udp"},
			},
			want: []string{`"udp"`, "not a datagram socket"},
		},
		{
			name:   "required missing, optional absent",
			passed: []string{"metrics/tcp"},
			servers: []childServer{
				{Kind: "http", Name: "metrics"},
				{Kind: "http", Name: "web"},
				{Kind: "stream", Name: "admin", Optional: true},
			},
			want:    []string{`"web"`, "missing"},
			notWant: []string{"admin"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			notify := notifytest.Listen(t)
			var names []string
			var files []*os.File
			for _, p := range c.passed {
				name, kind, _ := strings.Cut(p, "/")
				var f *os.File
				if kind == "udp" {
					_, f = udpSocket(t)
				} else {
					_, f = tcpSocket(t)
				}
				names, files = append(names, name), append(files, f)
			}
			// Every server has a free fallback address: with sockets
			// passed, none may be bound.
			for i := range c.servers {
				s := &c.servers[i]
				s.Address = freeAddr(t)
				if s.Kind == "datagram" {
					s.Address = freeUDPAddr(t)
				}
			}
			js, _ := json.Marshal(c.servers)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			svc := startService(t, "passed", names, files, nil, w, "NOTIFY_SOCKET="+notify.Addr(), childServersEnv+"="+string(js))
			w.Close()
			out, _ := io.ReadAll(io.LimitReader(r, 64<<10))
			if code := svc.exit(t, 15*time.Second); code != 0 {
				t.Fatalf("child exit %d", code)
			}
			var res childResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("child said %q: %v", out, err)
			}
			if res.Err == "" {
				t.Fatalf("Run(%s) = nil, want an error", c.name)
			}
			for _, w := range c.want {
				if !strings.Contains(res.Err, w) {
					t.Errorf("Run() = %q, want it to say %s", res.Err, w)
				}
			}
			for _, nw := range c.notWant {
				if strings.Contains(res.Err, nw) {
					t.Errorf("Run() = %q, want nothing about %s", res.Err, nw)
				}
			}
			if len(res.Taken) > 0 {
				t.Errorf("fallback addresses %v bound by a service given its sockets", res.Taken)
			}
			msgs := notifyUntilMark(t, notify)
			var status string
			for _, m := range msgs {
				if m.Has("READY=1") {
					t.Errorf("READY=1 sent by a service that did not start: %v", m)
				}
				if st, ok := m.Get("STATUS"); ok {
					status = st
				}
			}
			if !strings.HasPrefix(status, "start failed: ") || !strings.Contains(status, c.want[0]) {
				t.Errorf("last STATUS=%q, want start failed: ... %s", status, c.want[0])
			}
		})
	}
}

// udpClient sends numbered datagrams to a service and collects the answers
// ("<pid> <number>").
type udpClient struct {
	t *testing.T
	c *net.UDPConn
}

func newUDPClient(t *testing.T, addr string) *udpClient {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadBuffer(1 << 20)
	return &udpClient{t: t, c: c}
}

func (u *udpClient) send(seq int) {
	u.t.Helper()
	if _, err := u.c.Write([]byte(strconv.Itoa(seq))); err != nil {
		u.t.Fatalf("send %d: %v", seq, err)
	}
}

// read reads one answer by the deadline: the pid and the number.
func (u *udpClient) read(deadline time.Time) (pid, seq int, err error) {
	u.c.SetReadDeadline(deadline)
	b := make([]byte, 128)
	n, err := u.c.Read(b)
	if err != nil {
		return 0, 0, err
	}
	p, s, ok := strings.Cut(string(b[:n]), " ")
	pid, perr := strconv.Atoi(p)
	seq, serr := strconv.Atoi(s)
	if !ok || perr != nil || serr != nil {
		return 0, 0, fmt.Errorf("answer %q, want <pid> <number>", b[:n])
	}
	return pid, seq, nil
}

// answered sends seq until it is answered (datagrams may be lost in
// principle, though not on loopback) and returns the pid that answered.
func (u *udpClient) answered(seq int) int {
	u.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		u.send(seq)
		for {
			pid, got, err := u.read(time.Now().Add(time.Second))
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				u.t.Fatal(err)
			}
			if got == seq {
				return pid
			}
		}
	}
	u.t.Fatalf("datagram %d not answered within 10 s", seq)
	return 0
}

// udpService starts the udp child on a passed datagram socket. say ends a
// hold (see udpChild) and hear reads a line the service says (bounded).
func udpService(t *testing.T, notify *notifytest.Socket, env ...string) (svc *started, addr string, say func(), hear func() string) {
	t.Helper()
	addr, f := udpSocket(t)
	fifo := filepath.Join(t.TempDir(), "release")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Open for reading and writing, which does not wait for a reader:
	// the service's open then does not wait either.
	release, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release.Close(); outR.Close() })
	env = append(env, "NOTIFY_SOCKET="+notify.Addr(), childReleaseEnv+"="+fifo)
	svc = startService(t, "udp", []string{"udp"}, []*os.File{f}, nil, outW, env...)
	outW.Close()
	lines := make(chan string, 8)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	say = func() {
		if _, err := release.Write([]byte("go on\n")); err != nil {
			t.Fatal(err)
		}
	}
	hear = func() string {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(15 * time.Second):
			t.Fatal("the service said nothing within 15 s")
			return ""
		}
	}
	return svc, addr, say, hear
}

// TestRunDatagramOneReaderAtHandOver holds a reload in the new generation
// once it was told to start, before it says it accepts: both generations
// run and the old one is still the main process, but only the new one may
// read the datagram socket now. Each datagram sent meanwhile is answered
// once, by the new generation; so is one sent after the hand-over.
func TestRunDatagramOneReaderAtHandOver(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	subreaper(t)
	notify := notifytest.Listen(t)
	svc, addr, say, hear := udpService(t, notify, childHoldEnv+"=new-accepting")
	notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	u := newUDPClient(t, addr)
	if pid := u.answered(0); pid != svc.pid {
		t.Fatalf("datagram answered by pid %d, want %d", pid, svc.pid)
	}

	if err := syscall.Kill(svc.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if l := hear(); l != "at new-accepting" {
		t.Fatalf("service said %q, want at new-accepting", l)
	}
	// One at a time, so that each is a fresh race between two readers if
	// the old generation still read.
	const n = 50
	byPID := map[int]int{}
	for seq := 1; seq <= n; seq++ {
		byPID[u.answered(seq)]++
	}
	if byPID[svc.pid] != 0 || len(byPID) != 1 {
		t.Errorf("answers by pid while the new generation was starting: %v, want all %d by the new one (the old is %d)", byPID, n, svc.pid)
	}
	say()

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	newPID, _, err := mainPID(ctx, notify, 0)
	if err != nil {
		t.Fatal(err)
	}
	gen := adopt(t, newPID)
	if byPID[newPID] != n {
		t.Errorf("answers by pid: %v, want all %d by the new generation %d", byPID, n, newPID)
	}
	if code := svc.exit(t, 15*time.Second); code != 0 {
		t.Errorf("old generation exit %d, want 0", code)
	}
	if pid := u.answered(n + 1); pid != newPID {
		t.Errorf("after the hand-over, answered by pid %d, want %d", pid, newPID)
	}
	syscall.Kill(newPID, syscall.SIGTERM)
	if code := gen.exit(t, 15*time.Second); code != 0 {
		t.Errorf("new generation exit %d on SIGTERM, want 0", code)
	}
}

var reloadFailedPID = regexp.MustCompile(`new generation \(pid ([0-9]+)\)`)

// TestRunDatagramReadsAfterFailedHandOver: a new generation that dies
// after it was told to start fails the reload, and the old generation,
// which stopped reading for the hand-over, reads and answers again.
func TestRunDatagramReadsAfterFailedHandOver(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	subreaper(t)
	notify := notifytest.Listen(t)
	svc, addr, _, _ := udpService(t, notify, childFailEnv+"=new-accepting")
	_, i := notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	u := newUDPClient(t, addr)
	if pid := u.answered(0); pid != svc.pid {
		t.Fatalf("datagram answered by pid %d, want %d", pid, svc.pid)
	}
	if err := syscall.Kill(svc.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	m, _, err := notify.Wait(ctx, i+1, func(m notifytest.Message) bool {
		st, _ := m.Get("STATUS")
		return strings.HasPrefix(st, "reload failed: ")
	})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := m.Get("STATUS")
	if sub := reloadFailedPID.FindStringSubmatch(st); sub != nil {
		pid, _ := strconv.Atoi(sub[1])
		if code := adopt(t, pid).exit(t, 10*time.Second); code != 3 {
			t.Errorf("new generation exit %d, want 3 (it was made to fail)", code)
		}
	} else {
		t.Errorf("STATUS=%q, want the failed generation's pid", st)
	}
	for seq := 1; seq <= 20; seq++ {
		if pid := u.answered(seq); pid != svc.pid {
			t.Fatalf("after the failed reload datagram %d answered by pid %d, want the old generation %d", seq, pid, svc.pid)
		}
	}
	syscall.Kill(svc.pid, syscall.SIGTERM)
	if code := svc.exit(t, 15*time.Second); code != 0 {
		t.Errorf("exit %d on SIGTERM, want 0", code)
	}
}
