package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/peerread"
)

// TestMain runs the real webapp when the test binary is re-executed as a
// child with WEBAPP_TEST_MAIN=1, with the child's arguments after "--",
// a subreaper with WEBAPP_TEST_REAPER=1 (see reap), and a parent that
// leaves orphans with WEBAPP_TEST_ORPHANS=n (see leaveOrphans).
func TestMain(m *testing.M) {
	if os.Getenv("WEBAPP_TEST_MAIN") == "1" {
		os.Unsetenv("WEBAPP_TEST_MAIN")
		os.Args = append(os.Args[:1], os.Args[2:]...) // drop the "--"
		os.Exit(realMain())
	}
	if os.Getenv("WEBAPP_TEST_REAPER") == "1" {
		os.Exit(reap(os.Args[2:]))
	}
	if n := os.Getenv("WEBAPP_TEST_ORPHANS"); n != "" {
		os.Exit(leaveOrphans(n))
	}
	os.Exit(m.Run())
}

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// child is webapp running in a child process.
type child struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// webappCmd is the test binary set up to run webapp with args.
func webappCmd(t *testing.T, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"--"}, args...)...)
	cmd.Env = append(os.Environ(), "WEBAPP_TEST_MAIN=1")
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// startWebapp runs `webapp serve --listen <free port> args...` and waits
// until it answers.
func startWebapp(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	addr := freeAddr(t)
	c := &child{addr: addr, stderr: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = webappCmd(t, env, append([]string{"serve", "--listen", addr}, args...)...)
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("webapp stderr:\n%s", c.stderr.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return c
		}
		select {
		case <-c.done:
			t.Fatalf("webapp exited before serving: %v\n%s", c.err, c.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("webapp not serving on %s after 10s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait returns the exit code, failing the test after timeout.
func (c *child) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("webapp still running after %v", timeout)
	}
	return c.cmd.ProcessState.ExitCode()
}

// conn is a kept-alive client connection without retries.
type conn struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{c: c, br: bufio.NewReader(c)}
}

func (c *conn) get(path string) (*http.Response, string, error) {
	if err := c.send(path); err != nil {
		return nil, "", err
	}
	return c.read()
}

func TestEndpoints(t *testing.T) {
	c := startWebapp(t, nil)
	cl := dial(t, c.addr)
	pid := strconv.Itoa(c.cmd.Process.Pid)
	tests := []struct {
		path     string
		status   int
		wantBody string
	}{
		{"/", 200, "hello world\n"},
		{"/healthz", 200, "ok\n"},
		{"/slow?ms=50", 200, "slept 50 ms\n"},
		{"/slow?ms=-1", 400, ""},
		{"/slow?ms=abc", 400, ""},
		{"/slow?ms=999999999", 400, ""},
		{"/nope", 404, ""},
	}
	for _, tt := range tests {
		resp, body, err := cl.get(tt.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.path, err)
		}
		if resp.StatusCode != tt.status {
			t.Errorf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.status)
		}
		if tt.wantBody != "" && body != tt.wantBody {
			t.Errorf("GET %s body = %q, want %q", tt.path, body, tt.wantBody)
		}
		if got := resp.Header.Get("X-Webapp-Pid"); got != pid {
			t.Errorf("GET %s X-Webapp-Pid = %q, want %s", tt.path, got, pid)
		}
		if got := resp.Header.Get("X-Webapp-Version"); got != webappVersion() {
			t.Errorf("GET %s X-Webapp-Version = %q, want %s", tt.path, got, webappVersion())
		}
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"version", "--short"}, webappVersion()},
		{[]string{"version"}, "webapp " + webappVersion() + " ("},
		{[]string{"--version"}, "webapp " + webappVersion() + " ("},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := run(context.Background(), tt.args, &out, io.Discard); err != nil {
			t.Fatalf("run(%q) = %v", tt.args, err)
		}
		got := out.String()
		if tt.want == webappVersion() && got != tt.want+"\n" || !strings.HasPrefix(got, tt.want) || strings.Count(got, "\n") != 1 {
			t.Errorf("webapp %q = %q, want one line beginning %q", tt.args, got, tt.want)
		}
	}
}

func TestVersionLine(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	settings := func(kv ...string) *debug.BuildInfo {
		info := &debug.BuildInfo{GoVersion: "go1.26.8"}
		for i := 0; i < len(kv); i += 2 {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return info
	}
	tests := []struct {
		name         string
		info         *debug.BuildInfo
		commit, date string
		want         string
	}{
		{"stamped", settings("vcs", "git", "vcs.revision", "96fe289c1a2b3c4d5e6f", "vcs.time", "2026-12-02T01:02:03Z", "vcs.modified", "false"), "", "",
			"webapp 1.2.3 (commit 96fe289c1a2b of 2026-12-02, go1.26.8, " + platform + ")"},
		{"modified", settings("vcs.revision", "96fe289c1a2b3c4d5e6f", "vcs.time", "2026-12-02T23:30:00-02:00", "vcs.modified", "true"), "", "",
			"webapp 1.2.3 (commit 96fe289c1a2b-dirty of 2026-12-03, go1.26.8, " + platform + ")"},
		{"stamp and link-time commit", settings("vcs.revision", "96fe289c1a2b3c4d5e6f", "vcs.time", "2026-12-02T01:02:03Z"), "0123456789ab", "2026-11-30",
			"webapp 1.2.3 (commit 96fe289c1a2b of 2026-12-02, go1.26.8, " + platform + ")"},
		{"link-time commit", settings("-trimpath", "true"), "0123456789ab-dirty", "2026-11-30",
			"webapp 1.2.3 (commit 0123456789ab-dirty of 2026-11-30, go1.26.8, " + platform + ")"},
		{"no vcs stamp", settings("-trimpath", "true"), "", "", "webapp 1.2.3 (commit unknown, go1.26.8, " + platform + ")"},
		{"no build info", nil, "", "", "webapp 1.2.3 (commit unknown, " + runtime.Version() + ", " + platform + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := versionLine("1.2.3", tt.info, tt.commit, tt.date); got != tt.want {
				t.Errorf("versionLine(1.2.3, %s, %q, %q) = %q, want %q", tt.name, tt.commit, tt.date, got, tt.want)
			}
		})
	}
}

// TestBadCommandLines runs the real program: each bad command line exits 2
// with a usage line on stderr.
func TestBadCommandLines(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no command", nil, nil, "usage: webapp"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{"unknown flag", []string{"serve", "--bogus"}, nil, "flag provided but not defined: -bogus"},
		{"bad duration", []string{"serve", "--drain-timeout", "soon"}, nil, `--drain-timeout "soon": want a duration with a unit`},
		{"zero drain", []string{"serve", "--drain-timeout", "0s"}, nil, "--drain-timeout 0s: must be positive"},
		{"negative grace", []string{"serve", "--idle-grace", "-1s"}, nil, "--idle-grace -1s"},
		{"negative shutdown delay", []string{"serve", "--shutdown-delay", "-1s"}, nil, "--shutdown-delay -1s: must not be negative"},
		{"shutdown delay without unit", []string{"serve", "--shutdown-delay", "2"}, nil, `--shutdown-delay "2": want a duration with a unit`},
		{"grace past deadline", []string{"serve", "--idle-grace", "5s", "--drain-timeout", "2s"}, nil, "must be shorter than --drain-timeout"},
		{"bad log format", []string{"serve", "--log-format", "xml"}, nil, `--log-format "xml"`},
		{"bad log level", []string{"serve", "--log-level", "loud"}, nil, `--log-level "loud"`},
		{"empty listen", []string{"serve", "--listen", ""}, nil, `--listen "": empty address`},
		{"extra argument", []string{"serve", "now"}, nil, `unexpected argument "now"`},
		{"version argument", []string{"version", "x"}, nil, `version: unexpected argument "x"`},
		{"unknown version flag", []string{"version", "--long"}, nil, "flag provided but not defined: -long"},
		{"reload extra argument", []string{"reload", "--control", "/run/x.sock", "now"}, nil, `reload: unexpected argument "now"`},
		{"bad health switch", []string{"serve"}, []string{"WEBAPP_FAIL_HEALTH_AFTER=later"}, "WEBAPP_FAIL_HEALTH_AFTER"},
		{"negative stop timeout", []string{"serve", "--stop-timeout", "-5s"}, nil, "--stop-timeout -5s: must not be negative"},
		{"bad stop timeout", []string{"serve", "--stop-timeout", "30"}, nil, `--stop-timeout "30": want a duration with a unit`},
		{"bad drain switch", []string{"serve"}, []string{"WEBAPP_IGNORE_DRAIN=yes"}, `WEBAPP_IGNORE_DRAIN="yes": want 1 or nothing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := webappCmd(t, tt.env, tt.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("webapp %q exit = %d (%v), want 2", tt.args, code, err)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("webapp %q stderr = %q, want it to contain %q", tt.args, stderr.String(), tt.want)
			}
		})
	}
}

// TestFlagErrorsSayOnce runs the real program: a bad flag of a subcommand
// is said once, on one line, followed by where the usage is; the flag list
// is not printed.
func TestFlagErrorsSayOnce(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--bogus"}, "webapp: flag provided but not defined: -bogus"},
		{[]string{"serve", "--drain-timeout=5"}, `webapp: --drain-timeout "5": want a duration with a unit, such as 5s or 500ms`},
		{[]string{"serve", "--idle-grace", "1"}, `webapp: --idle-grace "1": want a duration with a unit, such as 5s or 500ms`},
		{[]string{"serve", "--reload-timeout=20"}, `webapp: --reload-timeout "20": want a duration with a unit, such as 5s or 500ms`},
		{[]string{"reload", "--timeout=5"}, `webapp: --timeout "5": want a duration with a unit, such as 5s or 500ms`},
		{[]string{"reload", "--bogus"}, "webapp: flag provided but not defined: -bogus"},
		{[]string{"serve", "--listen=nonsense"}, `webapp: --listen "nonsense": want host:port (such as 127.0.0.1:8080 or :8080) or the absolute path of a unix socket`},
		{[]string{"serve", "--listen=:70000"}, `webapp: --listen ":70000": port "70000": want a number from 0 to 65535`},
		{[]string{"serve", "--listen", "127.0.0.1:http"}, `webapp: --listen "127.0.0.1:http": port "http": want a number from 0 to 65535`},
		{[]string{"serve", "--listen", "run/webapp.sock"}, `webapp: --listen "run/webapp.sock": want host:port (such as 127.0.0.1:8080 or :8080) or the absolute path of a unix socket`},
		{[]string{"serve", "--listen-https", "8443"}, `webapp: --listen-https "8443": want host:port (such as 127.0.0.1:8080 or :8080) or the absolute path of a unix socket`},
		{[]string{"serve", "--listen-grpc", "127.0.0.1:99999"}, `webapp: --listen-grpc "127.0.0.1:99999": port "99999": want a number from 0 to 65535`},
		{[]string{"serve", "--listen-udp", "udp://127.0.0.1:8125"}, `webapp: --listen-udp "udp://127.0.0.1:8125": want host:port (such as 127.0.0.1:8080 or :8080) or the absolute path of a unix socket`},
		{[]string{"serve", "--listen-grpc", "127.0.0.1:8080"}, `webapp: --listen-grpc "127.0.0.1:8080": the same address as --listen`},
		{[]string{"serve", "--listen-https", ":9000", "--listen-grpc", ":9000"}, `webapp: --listen-grpc ":9000": the same address as --listen-https`},
		{[]string{"serve", "--listen-udp", "/run/w.sock", "--listen-grpc", "/run/w.sock"}, `webapp: --listen-udp "/run/w.sock": the same address as --listen-grpc`},
		{[]string{"serve", "--tls-cert="}, `webapp: --tls-cert: empty path`},
		{[]string{"serve", "--tls-key", ""}, `webapp: --tls-key: empty path`},
		{[]string{"reload", "--control", "/run/x.sock", "--tls-cert="}, `webapp: --tls-cert: empty path`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := webappCmd(t, nil, tt.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("webapp %q exit = %d (%v), want 2", tt.args, code, err)
			}
			want := tt.want + "\nrun 'webapp " + tt.args[0] + " -h' for usage\n"
			if stderr.String() != want || stdout.Len() != 0 {
				t.Errorf("webapp %q stderr = %q, stdout %q, want stderr %q and no stdout", tt.args, stderr.String(), stdout.String(), want)
			}
		})
	}
}

// TestHelp: -h and --help of each command print its usage on stdout and
// exit 0.
func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "usage: webapp <command>"},
		{[]string{"help"}, "usage: webapp <command>"},
		{[]string{"serve", "-h"}, "usage: webapp serve"},
		{[]string{"serve", "--help"}, "usage: webapp serve"},
		{[]string{"reload", "-h"}, "usage: webapp reload"},
		{[]string{"reload", "--help"}, "usage: webapp reload"},
		{[]string{"version", "-h"}, "usage: webapp version"},
		{[]string{"version", "--help"}, "usage: webapp version"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), tt.args, &stdout, &stderr); err != nil {
			t.Errorf("run(%q) = %v, want nil", tt.args, err)
		}
		if !strings.HasPrefix(stdout.String(), tt.want) || stderr.Len() != 0 {
			t.Errorf("webapp %q: stdout %q, stderr %q, want the usage %q... on stdout only", tt.args, stdout.String(), stderr.String(), tt.want)
		}
	}
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8080", true},
		{":0", true},
		{"localhost:65535", true},
		{"[::1]:80", true},
		{"/run/webapp/http.sock", true},
		{"", false},
		{"nonsense", false},
		{"127.0.0.1", false},
		{"127.0.0.1:", false},
		{":65536", false},
		{":-1", false},
		{":http", false},
		{"::1:80", false},
		{"webapp.sock", false},
		{"/", false},
	}
	for _, tt := range tests {
		if err := checkListen(tt.addr); (err == nil) != tt.ok {
			t.Errorf("checkListen(%q) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}

func TestBindFailureIsClear(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := webappCmd(t, nil, "serve", "--listen", ln.Addr().String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("webapp on a busy port: exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "address already in use") || !strings.Contains(stderr.String(), `http`) {
		t.Errorf("webapp on a busy port: stderr %q, want the listener's name and the bind error", stderr.String())
	}
}

// send writes a GET of path on c without reading the answer.
func (c *conn) send(path string) error {
	_, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: webapp\r\n\r\n", path)
	return err
}

// read reads the answer to a request sent with send.
func (c *conn) read() (*http.Response, string, error) {
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// inFlight sends a GET of path on c and waits until webapp has read it.
func (c *conn) inFlight(t *testing.T, path string) {
	t.Helper()
	if err := c.send(path); err != nil {
		t.Fatal(err)
	}
	if err := peerread.Wait(c.c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// leaveOrphans is the test binary as a parent that starts n /bin/true
// and exits at once without waiting for any: running or exited, they
// are handed to the PID 1 of its namespace. (A shell would reap those
// that exit before it does.)
func leaveOrphans(n string) int {
	count, err := strconv.Atoi(n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orphans:", err)
		return 2
	}
	for range count {
		if _, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{}); err != nil {
			fmt.Fprintln(os.Stderr, "orphans:", err)
			return 1
		}
	}
	return 0
}
