package baton_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd/notifytest"
)

// TestMainCommand runs a service whose main is one baton.Main call (the
// README's quick start) as systemd would: socket-activated, reloaded by
// its own `reload` command (ExecReload=), stopped by SIGTERM. The reload
// command talks to the running generation and returns once the new one
// serves; it does not start a second server.
func TestMainCommand(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	subreaper(t)
	notify := notifytest.Listen(t)
	addr, f := tcpSocket(t)
	dir := t.TempDir()
	control := filepath.Join(dir, "control.sock")
	events := filepath.Join(dir, "events")
	failFile := filepath.Join(dir, "fail")
	svc := startService(t, "main", []string{"http"}, []*os.File{f}, nil, nil,
		"NOTIFY_SOCKET="+notify.Addr(), childControlEnv+"="+control, childEventsEnv+"="+events, childFailEnv2+"="+failFile)
	notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	if code, body := get(t, "http://"+addr+"/"); code != 200 || body != fmt.Sprintf("hello from pid %d\n", svc.pid) {
		t.Fatalf("GET / = %d %q, want 200 from pid %d", code, body, svc.pid)
	}

	// The commands that do not serve.
	for _, c := range []struct {
		args       []string
		code       int
		out, err   string
		controlEnv bool
	}{
		{args: []string{"version"}, out: "1.2.3\n"},
		{args: []string{"bogus"}, code: 2, err: `unknown command "bogus"`},
		{args: []string{"serve", "extra"}, code: 2, err: `unexpected arguments ["extra"]`},
		{args: []string{"reload", "--timeout", "0s"}, code: 2, err: "--timeout 0s: must be positive", controlEnv: true},
		{args: []string{"reload"}, code: 1, err: "no control socket: RUNTIME_DIRECTORY is not set"},
	} {
		var env []string
		if c.controlEnv {
			env = append(env, childControlEnv+"="+control)
		}
		code, out, errOut := runMain(t, c.args, env...)
		if code != c.code || !strings.HasSuffix(out, c.out) || !strings.Contains(errOut, c.err) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, stdout ending %q, stderr with %q", c.args, code, out, errOut, c.code, c.out, c.err)
		}
	}

	// A reload whose new generation fails: exit 1 with the reason, and the
	// old generation goes on serving.
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMain(t, []string{"reload", "--control", control})
	if code != 1 || !strings.Contains(errOut, "reload failed") || !strings.Contains(errOut, "exited before it was ready") {
		t.Errorf("reload of a failing binary: exit %d, stdout %q, stderr %q; want exit 1 saying the new generation exited before it was ready", code, out, errOut)
	}
	if code, body := get(t, "http://"+addr+"/"); code != 200 || body != fmt.Sprintf("hello from pid %d\n", svc.pid) {
		t.Fatalf("after the failed reload GET / = %d %q, want 200 from pid %d", code, body, svc.pid)
	}

	// The reload: exit 0 once the new generation serves, which says its pid.
	code, out, errOut = runMain(t, []string{"reload", "--control", control})
	if code != 0 {
		t.Fatalf("reload: exit %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
	m := regexp.MustCompile(`^reloaded: pid (\d+) is serving\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("reload printed %q, want \"reloaded: pid N is serving\"", out)
	}
	newPID, _ := strconv.Atoi(m[1])
	if newPID == svc.pid {
		t.Fatalf("reload: pid %d is still the one serving", newPID)
	}
	if code := svc.exit(t, 15*time.Second); code != 0 {
		t.Errorf("the old generation exited with %d after the hand-over, want 0", code)
	}
	t.Logf("reload: %q; pid %d after %d", out, newPID, svc.pid)
	gen := adopt(t, newPID)
	if code, body := get(t, "http://"+addr+"/"); code != 200 || body != fmt.Sprintf("hello from pid %d\n", newPID) {
		t.Errorf("after the reload GET / = %d %q, want 200 from pid %d", code, body, newPID)
	}
	notify.WaitFor(t, 0, "MAINPID="+m[1], time.Second)

	// The stop.
	from := len(notify.Messages())
	if err := syscall.Kill(newPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.WaitFor(t, from, "STOPPING=1", 10*time.Second)
	if code := gen.exit(t, 15*time.Second); code != 0 {
		t.Errorf("the new generation exited with %d on SIGTERM, want 0", code)
	}

	// The events of both generations, in each one's order.
	b, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	byPID := map[int][]eventLine{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e eventLine
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		byPID[e.PID] = append(byPID[e.PID], e)
	}
	kinds := func(es []eventLine) string {
		var k []string
		for _, e := range es {
			k = append(k, e.Kind)
		}
		return strings.Join(k, " ")
	}
	old, cur := byPID[svc.pid], byPID[newPID]
	if got, want := kinds(old), "started ready reload-started reload-failed reload-started reload-committed drain-started drain-finished"; got != want {
		t.Errorf("first generation's events: %s\nwant %s", got, want)
	}
	if got, want := kinds(cur), "started ready drain-started drain-finished"; got != want {
		t.Errorf("second generation's events: %s\nwant %s", got, want)
	}
	for _, e := range old {
		if e.Generation != 1 {
			t.Errorf("first generation's %s: Generation %d, want 1", e.Kind, e.Generation)
		}
		switch e.Kind {
		case "reload-failed":
			if e.FailedReloads != 1 || e.Reloads != 0 || !strings.Contains(e.Err, "exited before it was ready") {
				t.Errorf("reload-failed: %+v, want 1 failed, 0 reloads and the reason in Err", e)
			}
		case "reload-committed":
			if e.NewPID != newPID || e.Reloads != 1 || e.FailedReloads != 1 {
				t.Errorf("reload-committed: %+v, want NewPID %d, 1 reload, 1 failed", e, newPID)
			}
		case "drain-started", "drain-finished":
			if e.Stopping || e.Cut != 0 {
				t.Errorf("first generation's %s: %+v, want the drain after a hand-over, nothing cut", e.Kind, e)
			}
		}
	}
	for _, e := range cur {
		if e.Generation != 2 || e.Reloads != 1 || e.FailedReloads != 1 {
			t.Errorf("second generation's %s: %+v, want generation 2 with the service's 1 reload and 1 failed one", e.Kind, e)
		}
		if (e.Kind == "drain-started" || e.Kind == "drain-finished") && !e.Stopping {
			t.Errorf("second generation's %s: %+v, want a stop", e.Kind, e)
		}
	}
}

// runMain runs the test binary as the main child with args, and returns
// its exit code, stdout and stderr.
func runMain(t *testing.T, args []string, env ...string) (int, string, string) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, childControlEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, childEnv+"=main"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v: still running after 90 s", args)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}
