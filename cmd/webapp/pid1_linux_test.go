//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// requireNamespaces fails in CI and skips elsewhere when a fresh PID
// namespace cannot be made (it needs root and util-linux's unshare).
func requireNamespaces(t *testing.T) {
	t.Helper()
	requireTool(t, "unshare", "util-linux")
	requireTool(t, "nsenter", "util-linux")
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("a fresh PID namespace (unshare --pid) needs root")
	}
	t.Skip("a fresh PID namespace (unshare --pid) needs root: run `sudo go test ./cmd/webapp -run PID1`")
}

// initProc is a program run as PID 1 of a fresh PID namespace by
// `unshare --pid --fork --mount-proc`.
type initProc struct {
	cmd    *exec.Cmd // unshare
	pid    int       // the program, as the host sees it
	pidNS  string    // its PID namespace, as /proc/<pid>/ns/pid names it
	stderr *syncBuffer
	done   chan struct{}
}

// startInit runs argv as PID 1 of a fresh PID namespace, with env added,
// and returns once it runs (or has exited already: then pid is 0).
func startInit(t *testing.T, env []string, argv ...string) *initProc {
	t.Helper()
	p := &initProc{stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("unshare", append([]string{"--pid", "--fork", "--mount-proc", "--"}, argv...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			if p.pid > 0 {
				syscall.Kill(p.pid, syscall.SIGKILL) // the namespace ends with it
			}
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("PID 1's output:\n%s", p.stderr.String())
		}
	})
	// unshare's one child is the program, PID 1 inside.
	children := fmt.Sprintf("/proc/%d/task/%d/children", p.cmd.Process.Pid, p.cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(children)
		if f := strings.Fields(string(b)); len(f) == 1 {
			p.pid, _ = strconv.Atoi(f[0])
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid)); err == nil && nsPID(p.pid) == "1" {
				p.pidNS = ns
				return p
			}
		}
		select {
		case <-p.done:
			return p // it ran and exited already: the caller looks at why
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PID 1 under unshare (pid %d) within 10 s:\n%s", p.cmd.Process.Pid, p.stderr.String())
		}
	}
}

// nsPID is the pid of a host process inside its own PID namespace (the
// last field of NSpid:), "" if it is gone.
func nsPID(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(v)
			return f[len(f)-1]
		}
	}
	return ""
}

// others lists the processes of p's namespace other than PID 1, with
// their states ("1234 Z").
func (p *initProc) others() []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == p.pid {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns/pid")); err != nil || ns != p.pidNS {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ...: the state follows the last ')'.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) {
			out = append(out, e.Name()+" "+string(b[i+2]))
		}
	}
	return out
}

// orphans runs leaveOrphans inside p's namespace: n /bin/true become
// PID 1's children.
func (p *initProc) orphans(t *testing.T, n int) {
	t.Helper()
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(p.pid), "--pid", "--", os.Args[0])
	cmd.Env = append(os.Environ(), "WEBAPP_TEST_ORPHANS="+strconv.Itoa(n))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the helper in the namespace: %v\n%s", err, out)
	}
}

// waitInit waits for unshare (and so PID 1) to exit and returns the exit
// code.
func (p *initProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("PID 1 still running %v after it was asked to stop", timeout)
		return -1
	}
}

// startWebappInit runs `webapp serve --listen <free port> args...` as
// PID 1 and waits until it answers.
func startWebappInit(t *testing.T, args ...string) (*initProc, string) {
	t.Helper()
	addr := freeAddr(t)
	p := startInit(t, []string{"WEBAPP_TEST_MAIN=1"}, append([]string{os.Args[0], "--", "serve", "--listen", addr}, args...)...)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p, addr
		}
		select {
		case <-p.done:
			t.Fatalf("webapp as PID 1 exited before serving:\n%s", p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("webapp as PID 1 not serving on %s within 10 s:\n%s", addr, p.stderr.String())
		}
	}
}

// TestPID1Reaps: as PID 1 of a fresh PID namespace webapp reaps the
// orphans it inherits: 50 /bin/true left behind by a helper leave no
// zombie. The contrast, a PID 1 that does not reap (sleep), keeps all 50
// as zombies, so the check can fail. SIGHUP is refused with the
// documented message, and webapp keeps serving as PID 1.
func TestPID1Reaps(t *testing.T) {
	requireNamespaces(t)
	const n = 50
	zombies := func(p *initProc) (all []string, z int) {
		all = p.others()
		for _, s := range all {
			if strings.HasSuffix(s, " Z") {
				z++
			}
		}
		return all, z
	}

	t.Run("contrast: sleep as PID 1", func(t *testing.T) {
		p := startInit(t, nil, "/bin/sleep", "60")
		p.orphans(t, n)
		var z int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, z = zombies(p); z == n {
				break
			}
		}
		t.Logf("a PID 1 that does not reap: %d zombies of %d orphans", z, n)
		if z != n {
			t.Errorf("sleep as PID 1: %d zombies, want all %d orphans left as zombies (the helper did not run as expected)", z, n)
		}
	})

	p, addr := startWebappInit(t, "--log-level", "debug")
	if !strings.Contains(p.stderr.String(), "running as PID 1 (a container)") {
		t.Errorf("webapp as PID 1 did not say so in its log:\n%s", p.stderr.String())
	}
	p.orphans(t, n)
	var left []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if left = p.others(); len(left) == 0 && strings.Count(p.stderr.String(), "reaped orphan pid") == n {
			break
		}
	}
	reaped := strings.Count(p.stderr.String(), "reaped orphan pid")
	t.Logf("webapp as PID 1: %d orphans reaped, processes left in the namespace: %q", reaped, left)
	if len(left) != 0 || reaped != n {
		t.Errorf("webapp as PID 1 after %d orphans: %q left in the namespace and %d reaped, want none left and %d reaped", n, left, reaped, n)
	}

	// SIGHUP: refused, logged, and the same process keeps serving.
	if err := syscall.Kill(p.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.stderr.String(), reloadRefused); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within 10 s of SIGHUP", reloadRefused)
		}
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET / after SIGHUP: %v", err)
	}
	resp.Body.Close()
	if pid := resp.Header.Get("X-Webapp-Pid"); resp.StatusCode != 200 || pid != "1" {
		t.Errorf("GET / after SIGHUP = %d from pid %q, want 200 from pid 1 (the same process)", resp.StatusCode, pid)
	}
	if left := p.others(); len(left) != 0 {
		t.Errorf("after SIGHUP the namespace holds %q besides webapp, want no new generation", left)
	}
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("webapp as PID 1 exit = %d after SIGTERM, want 0", code)
	}
}

// TestPID1Control: webapp as PID 1 refuses a control socket, since it
// refuses reloads.
func TestPID1Control(t *testing.T) {
	requireNamespaces(t)
	p := startInit(t, []string{"WEBAPP_TEST_MAIN=1"}, os.Args[0], "--", "serve", "--listen", freeAddr(t), "--control", filepath.Join(t.TempDir(), "control.sock"))
	if code := p.wait(t, 15*time.Second); code != 2 || !strings.Contains(p.stderr.String(), "webapp is PID 1 (a container): reloads are refused there") {
		t.Errorf("webapp serve --control as PID 1: exit %d, output %q; want 2 and why", code, p.stderr.String())
	}
}

// TestPID1SIGTERMUnderLoad: webapp as PID 1 (no systemd: it owns its
// socket) gets SIGTERM under 32 clients opening a connection per request,
// which stop opening new ones 1 s after the SIGTERM, as they would once
// Kubernetes had removed the endpoint. With --shutdown-delay=2s none of
// them fails; with 0 the socket closes at once and the requests of that
// second are refused: the contrast, which must fail some.
func TestPID1SIGTERMUnderLoad(t *testing.T) {
	requireNamespaces(t)
	for _, c := range []struct {
		delay    string
		contrast bool
	}{{"2s", false}, {"0s", true}} {
		t.Run("shutdown-delay="+c.delay, func(t *testing.T) {
			p, addr := startWebappInit(t, "--shutdown-delay="+c.delay)
			var sent time.Time
			res, err := load.Run(context.Background(), "http://"+addr+"/", load.Options{
				Clients:     32,
				Mode:        load.NewConnection,
				Duration:    30 * time.Second,
				MaxRequests: 2_000_000,
				Schedule: load.Schedule{Start: time.Second, Count: 1, Run: func(ctx context.Context, _ int) error {
					sent = time.Now()
					if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil {
						return err
					}
					// The endpoint is removed 1 s later: no new connection after.
					select {
					case <-time.After(time.Second):
					case <-ctx.Done():
					}
					return nil
				}},
				Tail: time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range res.Events {
				if ev.Err != nil {
					t.Fatalf("SIGTERM: %v", ev.Err)
				}
			}
			code := p.wait(t, 30*time.Second)
			t.Logf("--shutdown-delay=%s, SIGTERM to PID 1 at %v, clients stop 1 s later: %d requests, %d ok, %d failed %+v; exit %d after %v",
				c.delay, sent.Sub(res.Started).Round(time.Millisecond), res.Requests, res.OK, res.Failed(), res.Failures, code, time.Since(sent).Round(time.Millisecond))
			if code != 0 {
				t.Errorf("webapp as PID 1 exit = %d after SIGTERM, want 0", code)
			}
			if res.OK == 0 {
				t.Fatal("no request answered")
			}
			switch {
			case !c.contrast && res.Failed() != 0:
				t.Errorf("--shutdown-delay=%s: %d of %d requests failed (%+v; %v), want none", c.delay, res.Failed(), res.Requests, res.Failures, res.FailureDetails[:min(5, len(res.FailureDetails))])
			case c.contrast && res.Failed() == 0:
				t.Errorf("--shutdown-delay=%s (the contrast): no request failed, want the requests after SIGTERM refused: the test cannot tell the delay's effect", c.delay)
			}
		})
	}
}
