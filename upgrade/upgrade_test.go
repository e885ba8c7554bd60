package upgrade_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/systemd/notifytest"
	"github.com/baton-dev/baton/upgrade"
)

// TestMain plays the new generation when the test binary is started by an
// Upgrader with UPGRADE_TEST_CHILD set.
func TestMain(m *testing.M) {
	mode := os.Getenv("UPGRADE_TEST_CHILD")
	if mode == "" {
		os.Exit(m.Run())
	}
	if dir := os.Getenv("UPGRADE_TEST_PIDS"); dir != "" {
		os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), nil, 0o644)
	}
	switch mode {
	case "exit":
		os.Exit(3)
	case "kill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "hang":
		select {}
	case "good", "slow", "die-at-commit", "hang-at-commit", "conns":
		os.Exit(child(mode))
	}
	os.Exit(99)
}

// child inherits the listener at fd 3, reports what else it inherited
// (report), becomes ready (after 300ms when slow), and answers each
// connection with its pid; with an inherited control socket it answers
// control requests too. In mode conns it takes the connections the old
// generation passes: on each it writes "moved <name> <pid>", then echoes
// one line.
func child(mode string) int {
	h, err := upgrade.Inherited()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	if err := writeReport(h); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fd, _ := strconv.Atoi(os.Getenv("TEST_LISTEN_FD"))
	f := os.NewFile(uintptr(fd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	if mode == "slow" {
		time.Sleep(300 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Ready(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	if mode == "conns" {
		if err := h.TakeConns(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
	}
	switch mode {
	case "die-at-commit":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "hang-at-commit":
		// Never accepts, never answers: a hang as the old generation sees it.
		time.Sleep(time.Hour)
	}
	accepted := make(chan int, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				accepted <- 0
				return
			}
			fmt.Fprintf(c, "%d\n", os.Getpid())
			c.Close()
		}
	}()
	if err := h.Accepting(ctx); err != nil && !errors.Is(err, upgrade.ErrOrphaned) {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	if c := h.Control(); c != nil {
		u, err := upgrade.New(upgrade.Options{Path: os.Args[0]}, func(int) (upgrade.Handover, error) {
			return upgrade.Handover{}, errors.New("child: no handover")
		})
		if err != nil {
			return 1
		}
		go u.ServeControl(context.Background(), c)
	}
	err = h.ReceiveConns(func(name string, c net.Conn) {
		fmt.Fprintf(c, "moved %s %d\n", name, os.Getpid())
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
				fmt.Fprintf(c, "echo %s", line)
			}
		}()
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
	}
	return <-accepted
}

// report is what a new generation inherited, as it writes it into its
// pid file before it says it is ready.
type report struct {
	// Same: a second Inherited returned the same Handoff.
	Same  bool
	Files []reportedFile
	// Env holds the hand-over variables still set after Inherited.
	Env []string
}

type reportedFile struct {
	Name, Content string
	CloseOnExec   bool
}

func writeReport(h *upgrade.Handoff) error {
	again, err := upgrade.Inherited()
	r := report{Same: again == h && err == nil}
	for _, f := range h.Files() {
		b, err := io.ReadAll(io.NewSectionReader(f.File, 0, 1<<20))
		if err != nil {
			return err
		}
		flags, err := unix.FcntlInt(f.File.Fd(), unix.F_GETFD, 0)
		if err != nil {
			return err
		}
		r.Files = append(r.Files, reportedFile{Name: f.Name, Content: string(b), CloseOnExec: flags&unix.FD_CLOEXEC != 0})
	}
	for _, kv := range os.Environ() {
		for _, k := range []string{"BATON_UPGRADE_FD=", "BATON_CONTROL_FD=", "BATON_UPGRADE_PID=", "BATON_UPGRADE_PARENT=", "BATON_FILES=", "BATON_FILES_FD=", "BATON_CONNS_FD="} {
			if strings.HasPrefix(kv, k) {
				r.Env = append(r.Env, kv)
			}
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(os.Getenv("UPGRADE_TEST_PIDS"), strconv.Itoa(os.Getpid())), b, 0o644)
}

type setup struct {
	ln     net.Listener
	file   *os.File
	notify *notifytest.Socket
	pids   string // directory where children write their pids
	// committed counts the calls of OnCommit: the old generation stops
	// accepting only there.
	committed atomic.Int32
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &setup{ln: ln, file: f, notify: notifytest.Listen(t), pids: t.TempDir()}
}

// upgrader starts this test binary in the given child mode.
func (s *setup) upgrader(t *testing.T, mode string, timeout time.Duration) *upgrade.Upgrader {
	t.Helper()
	return s.upgraderWith(t, mode, timeout, nil)
}

// upgraderWith is upgrader with options changed by edit.
func (s *setup) upgraderWith(t *testing.T, mode string, timeout time.Duration, edit func(*upgrade.Options)) *upgrade.Upgrader {
	t.Helper()
	n, err := systemd.NewNotifier(s.notify.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("UPGRADE_TEST_CHILD", mode)
	t.Setenv("UPGRADE_TEST_PIDS", s.pids)
	opts := upgrade.Options{Path: os.Args[0], Timeout: timeout, Notifier: n, OnCommit: func() { s.committed.Add(1) }}
	if edit != nil {
		edit(&opts)
	}
	u, err := upgrade.New(opts, func(firstFD int) (upgrade.Handover, error) {
		return upgrade.Handover{Files: []*os.File{s.file}, Env: []string{"TEST_LISTEN_FD=" + strconv.Itoa(firstFD)}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// children returns the pids of every child started so far, and makes sure
// they are gone when the test ends.
func (s *setup) children(t *testing.T) []int {
	ents, _ := os.ReadDir(s.pids)
	var pids []int
	for _, e := range ents {
		p, _ := strconv.Atoi(e.Name())
		pids = append(pids, p)
	}
	return pids
}

// report reads what the new generation pid inherited.
func (s *setup) report(t *testing.T, pid int) report {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.pids, strconv.Itoa(pid)))
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report of pid %d: %v (%q)", pid, err, b)
	}
	return r
}

func killAtEnd(t *testing.T, pid int) {
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 100 && alive(pid); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func nonblocking(t *testing.T, f *os.File) bool {
	sc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	sc.Control(func(fd uintptr) { flags, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	return flags&unix.O_NONBLOCK != 0
}

// killAndWait kills pid and waits, at most within, until all its threads
// have exited, and so closed its descriptors: its main thread shows as a
// zombie before the others are done.
func killAndWait(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGKILL)
	tasks := fmt.Sprintf("/proc/%d/task", pid)
	for deadline := time.Now().Add(within); ; time.Sleep(10 * time.Millisecond) {
		ents, err := os.ReadDir(tasks)
		if err != nil || len(ents) <= 1 && !alive(pid) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("pid %d still has %d threads %v after SIGKILL", pid, len(ents), within)
			return
		}
	}
}

// alive reports whether pid runs (a zombie counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

// stillAlive reports whether pid still runs after within, polling so that
// a process killed just now has time to die.
func stillAlive(pid int, within time.Duration) bool {
	for deadline := time.Now().Add(within); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return true
		}
	}
	return false
}

func askPID(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from the upgraded listener: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

func TestUpgradeHandsOver(t *testing.T) {
	s := newSetup(t)
	u := s.upgrader(t, "good", 10*time.Second)
	// This generation is accepting when the upgrade happens.
	acceptDone := make(chan error, 1)
	go func() {
		c, err := s.ln.Accept()
		if err == nil {
			c.Close()
		}
		acceptDone <- err
	}()
	res, err := u.Upgrade(context.Background())
	if err != nil {
		t.Fatalf("Upgrade() = %v", err)
	}
	killAtEnd(t, res.PID)
	select {
	case <-u.HandedOver():
	default:
		t.Error("HandedOver not closed after a successful upgrade")
	}
	// The old generation stops accepting, at once: handing the socket on
	// must not have switched it to blocking mode under our Accept.
	if !nonblocking(t, s.file) {
		t.Error("the handed-on socket is in blocking mode after the upgrade")
	}
	closed := make(chan struct{})
	go func() { s.ln.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("closing the old generation's listener blocks after the upgrade")
	}
	if err := <-acceptDone; !errors.Is(err, net.ErrClosed) {
		t.Errorf("old generation's Accept = %v, want net.ErrClosed", err)
	}
	// The new one answers on the inherited socket.
	if got := askPID(t, s.ln.Addr().String()); got != res.PID {
		t.Errorf("connection answered by pid %d, want the new generation %d", got, res.PID)
	}
	msgs := s.notify.Messages()
	var order []string
	for _, m := range msgs {
		switch {
		case m.Has("RELOADING=1"):
			if _, ok := m.Get("MONOTONIC_USEC"); !ok {
				t.Errorf("RELOADING=1 without MONOTONIC_USEC: %v", m)
			}
			order = append(order, "reloading")
		case m.Has("READY=1"):
			if v, _ := m.Get("MAINPID"); v != strconv.Itoa(res.PID) {
				t.Errorf("READY=1 with MAINPID=%q, want %d", v, res.PID)
			}
			order = append(order, "mainpid+ready")
		case m.Has("BARRIER=1"):
			order = append(order, "barrier")
		}
	}
	if got := strings.Join(order, ","); got != "reloading,mainpid+ready,barrier" {
		t.Errorf("notifications %s, want reloading,mainpid+ready,barrier", got)
	}
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, upgrade.ErrHandedOver) {
		t.Errorf("second Upgrade() after hand-over = %v, want ErrHandedOver", err)
	}
	// Upgrade passes no files, and Inherited is the same on every call.
	r := s.report(t, res.PID)
	if len(r.Files) != 0 || !r.Same || len(r.Env) != 0 {
		t.Errorf("new generation inherited %+v, want no files, one Handoff, no hand-over variables left", r)
	}
}

func TestUpgradeFailures(t *testing.T) {
	tests := []struct {
		mode    string
		path    string
		want    string
		timeout time.Duration
	}{
		{"exit", "", "exited before it was ready", 10 * time.Second},
		{"kill", "", "exited before it was ready", 10 * time.Second},
		{"hang", "", "not ready within 500ms", 500 * time.Millisecond},
		{"die-at-commit", "", "exited after the commit", 10 * time.Second},
		{"hang-at-commit", "", "did not start accepting within 500ms after the commit", 500 * time.Millisecond},
		{"good", "/nonexistent/webapp", "cannot start the new binary", 10 * time.Second},
		{"good", "notexec", "not executable", 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.mode+tt.path, func(t *testing.T) {
			s := newSetup(t)
			u := s.upgrader(t, tt.mode, tt.timeout)
			if tt.path != "" {
				p := tt.path
				if p == "notexec" {
					p = filepath.Join(t.TempDir(), "webapp")
					os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644)
				}
				var err error
				u, err = upgrade.New(upgrade.Options{Path: p}, func(int) (upgrade.Handover, error) { return upgrade.Handover{}, nil })
				if err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			_, err := u.Upgrade(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Upgrade() = %v, want an error saying %q", err, tt.want)
			}
			if d := time.Since(start); d > tt.timeout+5*time.Second {
				t.Errorf("Upgrade() took %v to fail, want within the %v timeout", d, tt.timeout)
			}
			for _, pid := range s.children(t) {
				if stillAlive(pid, 5*time.Second) {
					t.Errorf("failed new generation %d still running 5 s after the failure", pid)
				}
			}
			select {
			case <-u.HandedOver():
				t.Error("HandedOver closed after a failed upgrade")
			default:
			}
			if n := s.committed.Load(); n != 0 {
				t.Errorf("OnCommit called %d times by a failed upgrade: the old generation would stop accepting", n)
			}
			if tt.path == "" {
				m, _ := s.notify.WaitFor(t, 0, "READY=1", time.Second)
				if st, _ := m.Get("STATUS"); !strings.HasPrefix(st, "reload failed: ") || !strings.Contains(st, tt.want) {
					t.Errorf("after failure STATUS=%q, want reload failed: ...%s", st, tt.want)
				}
				if _, ok := m.Get("MAINPID"); ok {
					t.Errorf("failure notification %v names a MAINPID", m)
				}
			}
		})
	}
}

// Concurrent requests share one attempt: one new generation, one outcome.
func TestConcurrentUpgradesShareOneAttempt(t *testing.T) {
	s := newSetup(t)
	u := s.upgrader(t, "slow", 10*time.Second)
	const n = 10
	var wg sync.WaitGroup
	pids := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := u.Upgrade(context.Background())
			pids[i], errs[i] = r.PID, err
		}()
	}
	wg.Wait()
	started := s.children(t)
	for _, p := range started {
		killAtEnd(t, p)
	}
	if len(started) != 1 {
		t.Fatalf("%d new generations started, want exactly 1", len(started))
	}
	for i := range n {
		if errs[i] == nil && pids[i] != started[0] {
			t.Errorf("Upgrade() #%d = pid %d, want %d", i, pids[i], started[0])
		}
		if errs[i] != nil && !errors.Is(errs[i], upgrade.ErrHandedOver) {
			t.Errorf("Upgrade() #%d = %v, want the shared outcome or ErrHandedOver", i, errs[i])
		}
	}
}

func TestUpgradeCanceled(t *testing.T) {
	s := newSetup(t)
	u := s.upgrader(t, "hang", 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := u.Upgrade(ctx)
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("Upgrade() with a canceled context = %v, want canceled", err)
	}
	for _, pid := range s.children(t) {
		if stillAlive(pid, 5*time.Second) {
			t.Errorf("new generation %d still running 5 s after cancel", pid)
		}
	}
}

func TestControlSocket(t *testing.T) {
	s := newSetup(t)
	u := s.upgrader(t, "good", 10*time.Second)
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := upgrade.ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := upgrade.ListenControl(path); err == nil {
		t.Error("ListenControl on a live socket succeeded, want an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.ServeControl(ctx, ln)

	pid, err := upgrade.MainPID(ctx, path)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("MainPID() = %d, %v; want this process %d", pid, err, os.Getpid())
	}
	res, err := upgrade.Request(ctx, path)
	if err != nil {
		t.Fatalf("Request() = %v", err)
	}
	killAtEnd(t, res.PID)
	// The control socket went with the listeners: the same path now
	// reaches the new generation.
	pid, err = upgrade.MainPID(ctx, path)
	if err != nil || pid != res.PID {
		t.Errorf("after the upgrade MainPID() = %d, %v; want the new generation %d", pid, err, res.PID)
	}
}

// A caller that is neither root nor the service's user is refused, even
// when the socket file lets it connect.
func TestControlSocketRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run a client as another user")
		}
		t.Skip("needs root to run a client as another user; run as root (make test under sudo)")
	}
	s := newSetup(t)
	u := s.upgrader(t, "good", 10*time.Second)
	// A directory and a copy of the test binary that another user can reach.
	dir, err := os.MkdirTemp("/var/tmp", "upgrade-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "client")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "control.sock")
	ln, err := upgrade.ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.ServeControl(ctx, ln)
	// A client process running as nobody.
	cmd := exec.Command(bin, "-test.run=^TestControlClientHelper$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "UPGRADE_TEST_CLIENT="+path, "UPGRADE_TEST_CHILD=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "permission denied: uid 65534") {
		t.Errorf("request as uid 65534: %s; want permission denied", out)
	}
	if n := len(s.children(t)); n != 0 {
		t.Errorf("%d new generations started for a refused request, want 0", n)
	}
}

// TestControlClientHelper is the client of TestControlSocketRefusesOtherUsers.
func TestControlClientHelper(t *testing.T) {
	path := os.Getenv("UPGRADE_TEST_CLIENT")
	if path == "" {
		return // only meaningful as a child
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := upgrade.Request(ctx, path)
	fmt.Println(err)
	if !errors.Is(err, upgrade.ErrDenied) {
		t.Fail()
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	h := func(int) (upgrade.Handover, error) { return upgrade.Handover{}, nil }
	if _, err := upgrade.New(upgrade.Options{Path: "webapp"}, h); err == nil {
		t.Error("New(relative path) = nil error, want an error")
	}
	if _, err := upgrade.New(upgrade.Options{Path: "/usr/bin/webapp", Timeout: -time.Second}, h); err == nil {
		t.Error("New(negative timeout) = nil error, want an error")
	}
	if _, err := upgrade.New(upgrade.Options{Path: "/usr/bin/webapp"}, nil); err == nil {
		t.Error("New(nil handover) = nil error, want an error")
	}
}

// A process not started by a previous generation inherits nothing, on
// every call.
func TestInheritedNotAChild(t *testing.T) {
	t.Setenv("BATON_UPGRADE_FD", "7")
	t.Setenv("BATON_UPGRADE_PARENT", "1")
	t.Setenv("BATON_FILES", "tls.crt")
	t.Setenv("BATON_FILES_FD", "8")
	for i := range 2 {
		h, err := upgrade.Inherited()
		if !errors.Is(err, upgrade.ErrNotInherited) || h != nil {
			t.Errorf("Inherited() call %d with another parent = %v, %v; want ErrNotInherited", i+1, h, err)
		}
		if files := h.Files(); files != nil {
			t.Errorf("Files() of a fresh start = %v, want nil", files)
		}
	}
}

// events records, in order, the hooks an Upgrader calls: its steps,
// "pause", "resume" and "commit" (OnCommit).
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, s)
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

func (e *events) count(s string) int {
	n := 0
	for _, g := range e.list() {
		if g == s {
			n++
		}
	}
	return n
}

// Pause is called once just before the commit; Resume exactly once on
// every failure after it, as the last thing before Upgrade returns, and
// never after a success or a failure before the commit.
func TestPauseResume(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		timeout time.Duration
		// at, if set, is done at the step, with the cancel of
		// Upgrade's context.
		at                  func(s upgrade.Step, pids []int, cancel context.CancelFunc)
		want                string // "" for success
		pauses, resumes, on int    // calls of Pause, Resume, OnCommit
	}{
		{name: "success", mode: "good", timeout: 10 * time.Second, pauses: 1, on: 1},
		{name: "exits before ready", mode: "exit", timeout: 10 * time.Second, want: "exited before it was ready"},
		{name: "hangs before ready", mode: "hang", timeout: 500 * time.Millisecond, want: "not ready within"},
		{name: "canceled before the commit", mode: "hang", timeout: 10 * time.Second, want: "canceled",
			at: func(s upgrade.Step, _ []int, cancel context.CancelFunc) {
				if s == upgrade.StepStarted {
					cancel()
				}
			}},
		{name: "dies after the commit", mode: "die-at-commit", timeout: 10 * time.Second, want: "exited after the commit", pauses: 1, resumes: 1},
		{name: "not accepting in time", mode: "hang-at-commit", timeout: 500 * time.Millisecond, want: "did not start accepting", pauses: 1, resumes: 1},
		{name: "canceled after the commit", mode: "hang-at-commit", timeout: 10 * time.Second, want: "canceled", pauses: 1, resumes: 1,
			at: func(s upgrade.Step, _ []int, cancel context.CancelFunc) {
				if s == upgrade.StepCommitted {
					cancel()
				}
			}},
		{name: "dies at its announcement", mode: "good", timeout: 10 * time.Second, want: "as it took over", pauses: 1, resumes: 1,
			at: func(s upgrade.Step, pids []int, _ context.CancelFunc) {
				if s != upgrade.StepAnnounced {
					return
				}
				for _, pid := range pids {
					killAndWait(t, pid, 5*time.Second)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ev events
			u := s.upgraderWith(t, tt.mode, tt.timeout, func(o *upgrade.Options) {
				o.Pause = func() { ev.add("pause") }
				o.Resume = func() { ev.add("resume") }
				o.OnCommit = func() { ev.add("commit") }
				o.OnStep = func(st upgrade.Step) {
					ev.add(string(st))
					if tt.at != nil {
						tt.at(st, s.children(t), cancel)
					}
				}
			})
			res, err := u.Upgrade(ctx)
			for _, pid := range s.children(t) {
				killAtEnd(t, pid)
			}
			got := ev.list()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Upgrade() = %v, want success", err)
			case tt.want == "" && res.PID == 0:
				t.Fatalf("Upgrade() = %+v, want the new pid", res)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Upgrade() = %+v, %v; want an error saying %q", res, err, tt.want)
			}
			if n := ev.count("pause"); n != tt.pauses {
				t.Errorf("Pause called %d times, want %d (events %v)", n, tt.pauses, got)
			}
			if n := ev.count("resume"); n != tt.resumes {
				t.Errorf("Resume called %d times, want %d (events %v)", n, tt.resumes, got)
			}
			if n := ev.count("commit"); n != tt.on {
				t.Errorf("OnCommit called %d times, want %d (events %v)", n, tt.on, got)
			}
			for i, e := range got {
				switch {
				case e == "pause" && (i == 0 || got[i-1] != string(upgrade.StepReady) || i+1 == len(got) || got[i+1] != string(upgrade.StepCommitted)):
					t.Errorf("events %v: want pause between %s and %s", got, upgrade.StepReady, upgrade.StepCommitted)
				case e == "resume" && i+1 != len(got):
					t.Errorf("events %v: want resume last, as Upgrade returns", got)
				}
			}
		})
	}
}

// With NotifyReload (Type=notify-reload), RELOADING=1 goes out only with
// the announcement's READY=1, and a failure sends no READY=1 at all.
func TestUpgradeNotifyReload(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		s := newSetup(t)
		u := s.upgraderWith(t, "good", 10*time.Second, func(o *upgrade.Options) { o.NotifyReload = true })
		res, err := u.Upgrade(context.Background())
		if err != nil {
			t.Fatalf("Upgrade() = %v", err)
		}
		killAtEnd(t, res.PID)
		var order []string
		for _, m := range s.notify.Messages() {
			switch {
			case m.Has("RELOADING=1") && m.Has("READY=1"):
				if _, ok := m.Get("MONOTONIC_USEC"); !ok {
					t.Errorf("RELOADING=1 without MONOTONIC_USEC: %v", m)
				}
				if v, _ := m.Get("MAINPID"); v != strconv.Itoa(res.PID) {
					t.Errorf("READY=1 with MAINPID=%q, want %d", v, res.PID)
				}
				order = append(order, "reloading+mainpid+ready")
			case m.Has("RELOADING=1"), m.Has("READY=1"):
				order = append(order, "separate:"+m.String())
			case m.Has("BARRIER=1"):
				order = append(order, "barrier")
			}
		}
		if got := strings.Join(order, ","); got != "reloading+mainpid+ready,barrier" {
			t.Errorf("notifications %s, want reloading+mainpid+ready,barrier", got)
		}
	})
	t.Run("failure", func(t *testing.T) {
		s := newSetup(t)
		u := s.upgraderWith(t, "exit", 10*time.Second, func(o *upgrade.Options) { o.NotifyReload = true })
		if _, err := u.Upgrade(context.Background()); err == nil {
			t.Fatal("Upgrade() with a new generation that exits = nil, want an error")
		}
		// The datagram is read in the background: wait for it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, _, err := s.notify.Wait(ctx, 0, func(m notifytest.Message) bool {
			v, _ := m.Get("STATUS")
			return strings.HasPrefix(v, "reload failed: ")
		}); err != nil {
			t.Errorf("no STATUS=reload failed: <why>: %v", err)
		}
		for _, m := range s.notify.Messages() {
			if m.Has("READY=1") || m.Has("RELOADING=1") {
				t.Errorf("a failed notify-reload swap sent %v, want neither READY=1 nor RELOADING=1", m)
			}
		}
	})
}

// A new generation that takes connections gets OnConns called on the old
// side, after "main" and before OnCommit; the connections the old one
// sends move to it: it answers on each. One that does not (an older
// binary) upgrades as before, without OnConns. Either way the old
// generation keeps no descriptor of the conns channel.
func TestUpgradePassesConns(t *testing.T) {
	for _, mode := range []string{"conns", "good"} {
		t.Run(mode, func(t *testing.T) {
			s := newSetup(t)
			var ev events
			senders := make(chan *upgrade.ConnSender, 1)
			u := s.upgraderWith(t, mode, 10*time.Second, func(o *upgrade.Options) {
				o.OnCommit = func() { ev.add("commit") }
				o.OnConns = func(cs *upgrade.ConnSender) {
					ev.add("conns")
					senders <- cs
				}
				o.OnStep = func(st upgrade.Step) { ev.add(string(st)) }
				// A notifier keeps a socket from its first message on.
				o.Notifier = nil
			})
			base := fdSnapshot(t)
			res, err := u.Upgrade(context.Background())
			if err != nil {
				t.Fatalf("Upgrade() = %v", err)
			}
			killAtEnd(t, res.PID)
			got := strings.Join(ev.list(), ",")
			if mode == "good" {
				if want := "started,ready,committed,announced,commit"; got != want {
					t.Errorf("events %s, want %s (no OnConns for a generation that takes no connections)", got, want)
				}
				if extra := waitNoNewFDs(t, base); len(extra) > 0 {
					t.Errorf("descriptors %v open after the upgrade, not before", extra)
				}
				return
			}
			if want := "started,ready,committed,announced,conns,commit"; got != want {
				t.Fatalf("events %s, want %s", got, want)
			}
			cs := <-senders
			clients, servers := tcpPairs(t, 4)
			names := []string{"http", "http", "admin", "http"}
			for i, c := range servers {
				if err := cs.Send(names[i], c.(*net.TCPConn)); err != nil {
					t.Fatalf("Send(%s) = %v", names[i], err)
				}
				c.Close()
			}
			if err := cs.Close(); err != nil {
				t.Errorf("ConnSender.Close() = %v", err)
			}
			if n := cs.Sent(); n != len(servers) {
				t.Errorf("Sent() = %d, want %d", n, len(servers))
			}
			for i, c := range clients {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				line, err := r.ReadString('\n')
				if want := fmt.Sprintf("moved %s %d\n", names[i], res.PID); line != want || err != nil {
					t.Errorf("client %d read %q, %v; want %q", i, line, err, want)
					continue
				}
				fmt.Fprintf(c, "ping %d\n", i)
				line, err = r.ReadString('\n')
				if want := fmt.Sprintf("echo ping %d\n", i); line != want || err != nil {
					t.Errorf("client %d read %q, %v after its ping; want %q", i, line, err, want)
				}
				c.Close()
			}
			if extra := waitNoNewFDs(t, base); len(extra) > 0 {
				t.Errorf("descriptors %v open after the upgrade and the move, not before", extra)
			}
		})
	}
}

// A failed upgrade keeps no descriptor: neither of the handshake nor of
// the conns channel.
func TestUpgradeFailureKeepsNoDescriptor(t *testing.T) {
	for _, mode := range []string{"exit", "die-at-commit"} {
		t.Run(mode, func(t *testing.T) {
			s := newSetup(t)
			u := s.upgraderWith(t, mode, 10*time.Second, func(o *upgrade.Options) {
				o.OnConns = func(cs *upgrade.ConnSender) { t.Error("OnConns called by a failed upgrade") }
				// A notifier keeps a socket from its first message on.
				o.Notifier = nil
			})
			base := fdSnapshot(t)
			if _, err := u.Upgrade(context.Background()); err == nil {
				t.Fatal("Upgrade() = nil, want an error")
			}
			if extra := waitNoNewFDs(t, base); len(extra) > 0 {
				t.Errorf("descriptors %v open after the failed upgrade, not before", extra)
			}
		})
	}
}

// tcpPairs dials n loopback connections and returns the client ends and
// the accepted ends, in the same order.
func tcpPairs(t *testing.T, n int) (clients, servers []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		clients, servers = append(clients, c), append(servers, s)
	}
	return clients, servers
}

// fdSnapshot maps each descriptor open in this process to what it is
// open on.
func fdSnapshot(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			// Closed since it was listed (ReadDir's own descriptor, or
			// another goroutine's): not open any more.
			continue
		}
		m[e.Name()] = target
	}
	return m
}

// waitNoNewFDs waits, at most 5 seconds, until no descriptor is open that
// was not open in before, and returns those that still are ("fd ->
// target").
func waitNoNewFDs(t *testing.T, before map[string]string) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var extra []string
		for fd, target := range fdSnapshot(t) {
			if before[fd] != target && !strings.HasPrefix(target, "/proc/") {
				extra = append(extra, fd+" -> "+target)
			}
		}
		if len(extra) == 0 || time.Now().After(deadline) {
			return extra
		}
		time.Sleep(10 * time.Millisecond)
	}
}
