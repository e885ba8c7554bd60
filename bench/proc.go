package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a server process started by the benchmark.
type Proc struct {
	PID  int
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	// exitedAt and err are valid once done is closed.
	exitedAt time.Time
	err      error
}

// StartProc starts path with args, writing both of its output streams to
// out, and returns once a line of that output contains ready. It fails if
// the process exits first or timeout passes (the process is then killed).
// Processes the program starts itself inherit the same output.
func StartProc(path string, args []string, out io.Writer, ready string, timeout time.Duration) (*Proc, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	// A file, not a writer: Wait then returns at the process's exit, not
	// once every process sharing the pipe has closed it.
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.Env = cleanEnv()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pw.Close()
	p := &Proc{PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		p.exitedAt = time.Now()
		close(p.done)
	}()
	readyC := make(chan struct{})
	go func() {
		defer pr.Close()
		var once sync.Once
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(out, line)
			if strings.Contains(line, ready) {
				once.Do(func() { close(readyC) })
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-readyC:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before it was ready: %v", path, p.err)
	case <-t.C:
		p.Kill()
		return nil, fmt.Errorf("%s not ready after %v", path, timeout)
	}
}

// cleanEnv is this process's environment without what would make a server
// believe it runs under systemd.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "RUNTIME_DIRECTORY", "JOURNAL_STREAM":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Stop sends sig and waits for the process to exit, at most timeout (then
// it is killed). It returns the time from the signal to the exit.
func (p *Proc) Stop(sig syscall.Signal, timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		return 0, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Kill()
		return 0, fmt.Errorf("pid %d still running %v after %v", p.PID, timeout, sig)
	}
	if p.err != nil {
		return p.exitedAt.Sub(t0), fmt.Errorf("pid %d: %w", p.PID, p.err)
	}
	return p.exitedAt.Sub(t0), nil
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill kills the process if it still runs and waits for it.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// pidRunning reports whether pid names a process that has not exited: a
// zombie counts as exited, since orphans wait for the host's PID 1 to reap
// them.
func pidRunning(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// stopPID sends SIGTERM to pid, a process that is not the benchmark's
// child, and waits until it has exited; after timeout it sends SIGKILL.
func stopPID(pid int, timeout time.Duration) error {
	if !pidRunning(pid) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if waitPIDGone(pid, timeout) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if waitPIDGone(pid, 5*time.Second) {
		return fmt.Errorf("pid %d killed: still running %v after SIGTERM", pid, timeout)
	}
	return fmt.Errorf("pid %d survived SIGKILL", pid)
}

// waitPIDGone polls until pid has exited, at most d; it reports whether it
// has.
func waitPIDGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for pidRunning(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
