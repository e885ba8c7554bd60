package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/peerread"
	"github.com/baton-dev/baton/systemd/notifytest"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// builtWebapp builds cmd/webapp once per test run, as `make build` does.
func builtWebapp(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "webapp-build-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "webapp")
		cmd := exec.Command("go", "build", "-trimpath", "-o", buildPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building webapp: %v", buildErr)
	}
	return buildPath
}

// requireTool fails in CI and skips elsewhere when a real dependency is
// missing.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (Debian package %s): `make deps` installs it", name, pkg)
	}
	t.Skipf("%s not found: install Debian package %s (`sudo make deps`) to run this test", name, pkg)
	return ""
}

// TestUnderSystemdSocketActivate runs the built webapp under Debian's
// systemd-socket-activate, which passes a named listening socket with the
// real LISTEN_FDS protocol, and checks that the answer comes from that
// process.
func TestUnderSystemdSocketActivate(t *testing.T) {
	tool := requireTool(t, "systemd-socket-activate", "systemd")
	bin := builtWebapp(t)
	addr := freeAddr(t)
	sock := notifytest.Listen(t)
	cmd := exec.Command(tool, "-l", addr, "--fdname=http", "-E", "NOTIFY_SOCKET="+sock.Addr(), bin, "serve", "--listen", "127.0.0.1:1")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("stderr:\n%s", stderr.String())
		}
	}()
	// The first connection is what starts webapp.
	var resp *http.Response
	var err error
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err = client.Get("http://" + addr + "/")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("GET / under systemd-socket-activate: %v", err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if body.String() != "hello world\n" {
		t.Errorf("GET / = %q, want hello world", body.String())
	}
	// systemd-socket-activate execs webapp in its own process.
	if got, want := resp.Header.Get("X-Webapp-Pid"), strconv.Itoa(cmd.Process.Pid); got != want {
		t.Errorf("X-Webapp-Pid = %s, want %s (the activated process)", got, want)
	}
	m, _ := sock.WaitFor(t, 0, "READY=1", 5*time.Second)
	if st, _ := m.Get("STATUS"); !strings.Contains(st, "systemd") || !strings.Contains(st, addr) {
		t.Errorf("STATUS=%q, want it to say it serves %s from the systemd socket", st, addr)
	}
}

// TestNotifyLifecycle checks the notifications webapp sends through a real
// notify socket: READY=1 only once the listener serves, STATUS= lines,
// BARRIER=1 with its descriptor, STOPPING=1 and a draining status on
// SIGTERM.
func TestNotifyLifecycle(t *testing.T) {
	sock := notifytest.Listen(t)
	c := startWebapp(t, []string{"NOTIFY_SOCKET=" + sock.Addr()})
	ready, i := sock.WaitFor(t, 0, "READY=1", 5*time.Second)
	st, ok := ready.Get("STATUS")
	if !ok || !strings.Contains(st, "serving http on "+c.addr) {
		t.Errorf("READY=1 came with STATUS=%q, want what it serves", st)
	}
	// READY=1 was sent after the listener served: it answers now.
	cl := dial(t, c.addr)
	if _, body, err := cl.get("/"); err != nil || body != "hello world\n" {
		t.Fatalf("GET / after READY=1: %q, %v", body, err)
	}
	b, _ := sock.WaitFor(t, i, "BARRIER=1", 5*time.Second)
	if b.FDs != 1 {
		t.Errorf("BARRIER=1 came with %d descriptors, want 1", b.FDs)
	}
	c.signal(t, syscall.SIGTERM)
	m, _ := sock.WaitFor(t, i, "STOPPING=1", 5*time.Second)
	if st, _ := m.Get("STATUS"); !strings.HasPrefix(st, "draining: ") || !strings.Contains(st, "connections remain") {
		t.Errorf("STOPPING=1 came with STATUS=%q, want a draining status with the count", st)
	}
	if code := c.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit = %d, want 0", code)
	}
}

// TestWatchdogStopsWhenUnhealthy runs webapp with WATCHDOG_USEC and the
// health switch: pings keep coming while healthy and stop once /healthz
// fails.
func TestWatchdogStopsWhenUnhealthy(t *testing.T) {
	sock := notifytest.Listen(t)
	c := startWebapp(t, []string{
		"NOTIFY_SOCKET=" + sock.Addr(),
		"WATCHDOG_USEC=200000",
		"WEBAPP_FAIL_HEALTH_AFTER=2s",
	})
	pings := func() int {
		n := 0
		for _, m := range sock.Messages() {
			if m.Has("WATCHDOG=1") {
				n++
			}
		}
		return n
	}
	// A ping every 100 ms while healthy: two show a loop, not a one-off.
	_, i := sock.WaitFor(t, 0, "WATCHDOG=1", 5*time.Second)
	sock.WaitFor(t, i+1, "WATCHDOG=1", 5*time.Second)
	// Until /healthz fails.
	cl := dial(t, c.addr)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, _, err := cl.get("/healthz")
		if err != nil {
			t.Fatalf("GET /healthz: %v", err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz = %d 15 s after start, want 503 after WEBAPP_FAIL_HEALTH_AFTER=2s", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	healthy := pings()
	if healthy < 2 {
		t.Errorf("%d watchdog pings while healthy, want one every 100 ms for about 2 s", healthy)
	}
	// A check that began before the switch may still ping; after that,
	// none for ten intervals.
	time.Sleep(time.Second)
	before := pings()
	time.Sleep(time.Second)
	if after := pings(); after != before {
		t.Errorf("%d watchdog pings in the second from 1 s after /healthz began failing, want none (%d while healthy)", after-before, healthy)
	}
}

// TestJournalLogging runs webapp with stderr as the JOURNAL_STREAM: lines
// carry syslog priorities and no timestamps.
func TestJournalLogging(t *testing.T) {
	f, journalEnv := journalStderr(t)
	addr := freeAddr(t)
	cmd := webappCmd(t, []string{journalEnv}, "serve", "--listen", addr, "--drain-timeout", "500ms", "--idle-grace", "100ms")
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A request cut at the deadline makes an error line.
	var conn net.Conn
	var err error
	for i := 0; i < 500; i++ {
		if conn, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /slow?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n"))
	if err := peerread.Wait(conn, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { <-ctx.Done(); cmd.Process.Kill() }()
	cmd.Wait()
	out, _ := os.ReadFile(f.Name())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var info, warnings int
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "<6>"):
			info++
		case strings.HasPrefix(l, "<4>"):
			warnings++
		case strings.HasPrefix(l, "<3>"):
		default:
			t.Errorf("line without a syslog priority prefix: %q", l)
		}
		if strings.Contains(l, "time=") {
			t.Errorf("line with a timestamp under journald: %q", l)
		}
	}
	// A stop that had to cut connections is a warning, not an error: it
	// ended at its deadline as designed (exit status 3).
	if info == 0 || warnings == 0 {
		t.Errorf("want <6> info lines and a <4> warning line (cut connections), got:\n%s", out)
	}
}

// TestReloadFailureUnderJournal: a failed `webapp reload` (ExecReload=)
// writes its reason at the err priority when stderr is the journal.
func TestReloadFailureUnderJournal(t *testing.T) {
	f, journalEnv := journalStderr(t)
	cmd := webappCmd(t, []string{journalEnv}, "reload", "--control", filepath.Join(t.TempDir(), "none.sock"))
	cmd.Stderr = f
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("webapp reload with nobody listening: exit %d, want 1", code)
	}
	out, _ := os.ReadFile(f.Name())
	if !strings.HasPrefix(string(out), "<3>webapp: reload failed: ") {
		t.Errorf("stderr = %q, want a <3> line saying the reload failed", out)
	}
}
