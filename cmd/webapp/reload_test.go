package main

import (
	"bufio"
	"bytes"
	"context"
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
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/internal/peerread"
	"github.com/baton-dev/baton/upgrade"
)

// installed is webapp installed at a path of its own (as /usr/bin/webapp
// is), started from there with a control socket.
type installed struct {
	path    string
	control string
	addr    string
	first   *exec.Cmd
	stderr  *syncBuffer
	mu      sync.Mutex
	pids    map[int]bool // every generation seen
}

func install(t *testing.T, args ...string) *installed {
	t.Helper()
	dir := t.TempDir()
	in := &installed{
		path:    filepath.Join(dir, "webapp"),
		control: filepath.Join(dir, "control.sock"),
		addr:    freeAddr(t),
		stderr:  &syncBuffer{},
		pids:    map[int]bool{},
	}
	in.put(t, builtWebapp(t))
	cmd := exec.Command(in.path, append([]string{"serve", "--listen", in.addr, "--control", in.control}, args...)...)
	cmd.Stderr = in.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.first = cmd
	go cmd.Wait()
	in.pids[cmd.Process.Pid] = true
	t.Cleanup(func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		for pid := range in.pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("webapp log:\n%s", in.stderr.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, err := upgrade.MainPID(ctx, in.control); err == nil {
			return in
		}
		if ctx.Err() != nil {
			t.Fatalf("webapp not answering on %s:\n%s", in.control, in.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// put installs the file at src as the binary, replacing it the way a
// package manager does (write aside, rename over).
func (in *installed) put(t *testing.T, src string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := in.path + ".new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, in.path); err != nil {
		t.Fatal(err)
	}
}

func (in *installed) mainPID(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pid, err := upgrade.MainPID(ctx, in.control)
	if err != nil {
		t.Fatal(err)
	}
	in.mu.Lock()
	in.pids[pid] = true
	in.mu.Unlock()
	return pid
}

// slowStart sends GET /slow?ms=2000 on a new connection and returns once
// webapp has read it; the returned function waits for the answer and
// reports the pid that answered.
func slowStart(addr string) (func() (int, error), error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &conn{c: nc, br: bufio.NewReader(nc)}
	if err := c.send("/slow?ms=2000"); err != nil {
		nc.Close()
		return nil, err
	}
	if err := peerread.Wait(nc, 10*time.Second); err != nil {
		nc.Close()
		return nil, err
	}
	return func() (int, error) {
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(15 * time.Second))
		resp, body, err := c.read()
		if err != nil || body != "slept 2000 ms\n" {
			return 0, fmt.Errorf("slow answer %q, %v", body, err)
		}
		return strconv.Atoi(resp.Header.Get("X-Webapp-Pid"))
	}, nil
}

// TestSIGHUPSwapUnderLoad is the swap without systemd: 20 SIGHUPs while 32
// clients load webapp, in each connection mode; two 2 s requests in flight
// at each swap complete on the old generation; no request fails. The
// "quick" runs swap 100 times with nothing slow in flight, so that each old
// generation's drain ends within milliseconds: the case where a connection
// accepted just before the hand-over used to lose its request.
func TestSIGHUPSwapUnderLoad(t *testing.T) {
	type run struct {
		name  string
		mode  load.Mode
		swaps int
		slow  int
		every time.Duration
	}
	for _, r := range []run{
		{"keepalive", load.KeepAlive, 20, 2, 300 * time.Millisecond},
		{"newconn", load.NewConnection, 20, 2, 300 * time.Millisecond},
		{"newconn-quick", load.NewConnection, 100, 0, 100 * time.Millisecond},
	} {
		mode := r.mode
		t.Run(r.name, func(t *testing.T) {
			in := install(t)
			var slowErrs []error
			var slowMu sync.Mutex
			var slowWG sync.WaitGroup
			res, err := load.Run(context.Background(), "http://"+in.addr+"/", load.Options{
				Clients:  32,
				Mode:     mode,
				Duration: 60 * time.Second,
				Tail:     time.Second,
				Schedule: load.Schedule{
					Start: 500 * time.Millisecond,
					Every: r.every,
					Count: r.swaps,
					Run: func(ctx context.Context, i int) error {
						old := in.mainPID(t)
						// The generation this swap starts, once known.
						var started int
						swapped := make(chan struct{})
						defer close(swapped)
						for range r.slow {
							// In flight before the swap: answered by a generation
							// that was there before it (old, or the one before
							// it if that was still finishing its own hand-over
							// on a busy machine), never by the one it starts.
							answer, err := slowStart(in.addr)
							if err != nil {
								return err
							}
							slowWG.Add(1)
							go func() {
								defer slowWG.Done()
								pid, err := answer()
								<-swapped
								if err == nil && pid == started {
									err = fmt.Errorf("2 s request sent before swap %d answered by pid %d, the generation that swap started (old: %d)", i, pid, old)
								}
								if err != nil {
									slowMu.Lock()
									slowErrs = append(slowErrs, err)
									slowMu.Unlock()
								}
							}()
						}
						if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
							return err
						}
						deadline := time.Now().Add(10 * time.Second)
						for {
							if started = in.mainPID(t); started != old {
								return nil
							}
							if time.Now().After(deadline) {
								return fmt.Errorf("SIGHUP %d: no new generation after 10s", i)
							}
							time.Sleep(5 * time.Millisecond)
						}
					},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			slowWG.Wait()
			for _, e := range res.Events {
				if e.Err != nil {
					t.Errorf("swap %d: %v", e.Index, e.Err)
				}
			}
			t.Logf("%s: %d requests, %d ok, %d generations answered, steady p99 %v, failures %+v",
				mode, res.Requests, res.OK, len(res.PIDs), res.Steady.P99, res.Failures)
			if len(res.Events) != r.swaps {
				t.Errorf("%d swaps ran, want %d", len(res.Events), r.swaps)
			}
			if n := res.Failed(); n != 0 {
				t.Errorf("%d requests failed, want 0: %+v", n, res.FailureDetails)
			}
			// Which generations the clients reached is the scheduler's
			// choice; the load crossed swaps, and only generations of this
			// webapp answered.
			if len(res.PIDs) < 2 {
				t.Errorf("%d generations answered, want the load to cross the swaps", len(res.PIDs))
			}
			in.mu.Lock()
			for pid := range res.PIDs {
				if p, err := strconv.Atoi(pid); err != nil || !in.pids[p] {
					t.Errorf("pid %s answered, not a generation seen (%v)", pid, in.pids)
				}
			}
			in.mu.Unlock()
			for _, e := range slowErrs {
				t.Error(e)
			}
			// Stop the last generation; the drained ones are gone.
			last := in.mainPID(t)
			syscall.Kill(last, syscall.SIGTERM)
			deadline := time.Now().Add(10 * time.Second)
			for pid := range in.pids {
				for pidAlive(pid) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if pidAlive(pid) {
					t.Errorf("generation %d still running after the last one was stopped", pid)
				}
			}
		})
	}
}

// TestReloadCommandFailures replaces the installed binary with broken ones:
// webapp reload fails with the reason, the old generation keeps serving,
// nothing is left running, and a good binary then swaps in.
func TestReloadCommandFailures(t *testing.T) {
	in := install(t, "--reload-timeout", "1s")
	pid := in.mainPID(t)
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755)
		return p
	}
	tests := []struct {
		name    string
		install func()
		want    string
	}{
		{"missing", func() { os.Remove(in.path) }, "cannot start the new binary"},
		{"not executable", func() { in.put(t, builtWebapp(t)); os.Chmod(in.path, 0o644) }, "not executable"},
		{"exits at once", func() { in.put(t, script("exit", "exit 3")) }, "exited before it was ready"},
		{"crashes", func() { in.put(t, script("crash", "kill -SEGV $$")) }, "exited before it was ready"},
		{"never ready", func() { in.put(t, script("hang", "exec sleep 30")) }, "not ready within 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.install()
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(builtWebapp(t), "reload", "--control", in.control)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("webapp reload = %v, want exit 1", err)
			}
			// Promptly: the broken binary that hangs would take 30 s.
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("webapp reload took %v to fail", d)
			}
			if !strings.Contains(stderr.String(), "reload failed: ") || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("webapp reload said %q, want the reason %q", stderr.String(), tt.want)
			}
			if got := in.mainPID(t); got != pid {
				t.Errorf("main pid %d after a failed reload, want the old %d", got, pid)
			}
			cl := dial(t, in.addr)
			if resp, body, err := cl.get("/"); err != nil || body != "hello world\n" || resp.Header.Get("X-Webapp-Pid") != strconv.Itoa(pid) {
				t.Errorf("after the failed reload GET / = %q, %v; want hello world from %d", body, err, pid)
			}
		})
	}
	// No failed generation is left behind (a killed one may take a moment
	// to go).
	var left []int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-f", in.path).Output()
		left = left[:0]
		for _, f := range strings.Fields(string(out)) {
			if p, _ := strconv.Atoi(f); p != pid && pidAlive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, p := range left {
		t.Errorf("process %d from a failed reload still runs 10 s after", p)
	}
	in.put(t, builtWebapp(t))
	out2, err := exec.Command(builtWebapp(t), "reload", "--control", in.control).CombinedOutput()
	if err != nil || !strings.Contains(string(out2), "reloaded: pid ") {
		t.Fatalf("reload with the good binary back: %s, %v", out2, err)
	}
	if got := in.mainPID(t); got == pid {
		t.Errorf("main pid still %d after a good reload", got)
	}
}

// TestReloadCertificateChecks: webapp reload checks the certificate and
// key it hands over before it asks for a swap. A pair that is not one, or
// half a pair, refuses the reload with the files named, and the running
// generation goes on; a good pair, or none at all, reloads.
func TestReloadCertificateChecks(t *testing.T) {
	in := install(t)
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 7)
	_, otherKey := ca.issue(t, 8)
	tests := []struct {
		name      string
		cert, key []byte // nil: no file
		want      string // {dir}: the files' directory; "" reloads
	}{
		{"key does not match", certPEM, otherKey, "reload refused: TLS key {dir}/tls.key with certificate {dir}/tls.crt: private key does not match public key"},
		{"certificate without key", certPEM, nil, "reload refused: TLS key {dir}/tls.key not found, but its certificate {dir}/tls.crt is there: both or neither"},
		{"garbled key", certPEM, []byte("-----BEGIN PRIVATE KEY-----\nnonsense\n"), "reload refused: TLS key {dir}/tls.key: no PEM block in it"},
		{"a pair", certPEM, keyPEM, ""},
		{"neither", nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c, k := writePair(t, dir, tt.cert, tt.key)
			pid := in.mainPID(t)
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(builtWebapp(t), "reload", "--control", in.control, "--tls-cert", c, "--tls-key", k)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tt.want == "" {
				if err != nil || !strings.HasPrefix(stdout.String(), "reloaded: pid ") {
					t.Fatalf("webapp reload = %v, %q %q; want it reloaded", err, stdout.String(), stderr.String())
				}
				if got := in.mainPID(t); got == pid {
					t.Errorf("main pid still %d after the reload", got)
				}
				return
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("webapp reload: exit %d, want 1", code)
			}
			if want := "webapp: " + strings.ReplaceAll(tt.want, "{dir}", dir) + "\n"; stderr.String() != want {
				t.Errorf("webapp reload said %q, want %q", stderr.String(), want)
			}
			if got := in.mainPID(t); got != pid {
				t.Errorf("main pid %d after a refused reload, want the old %d", got, pid)
			}
		})
	}
}

func TestReloadWithoutControlSocket(t *testing.T) {
	var stderr bytes.Buffer
	t.Setenv("RUNTIME_DIRECTORY", "")
	err := run(context.Background(), []string{"reload"}, io.Discard, &stderr)
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(ue.msg, "pass --control PATH, or send SIGHUP") {
		t.Errorf("webapp reload with no control socket = %v, want a usage error saying what to do", err)
	}
}

// pidAlive reports whether pid runs (a zombie counts as dead).
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}
