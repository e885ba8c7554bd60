package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
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

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

var modes = []load.Mode{load.KeepAlive, load.NewConnection}

// runAlternatives is scenario 5: the same disruption load against a plain
// net/http server restarted with Shutdown, tableflip's upgrade pattern,
// and webapp's own swap without systemd.
func runAlternatives(t *testing.T, e *benchEnv) []*Disruption {
	n := e.cfg.altEvents
	plain := &Disruption{
		Key: "plain-restart", Title: "plain net/http, restarted with Shutdown",
		Program: "plain net/http (`bench/cmd/plainhttp`)", Noun: "restart",
		Action: "SIGTERM (`Shutdown`), wait for exit, start again (bind)", Where: "on the host, owning its listener",
		Every: e.cfg.every, Margin: load.DefaultMargin,
	}
	flip := &Disruption{
		Key: "tableflip", Title: "tableflip, SIGHUP upgrade",
		Program: "tableflip v1.2.3 documented pattern (`bench/cmd/flipapp`)", Noun: "upgrade",
		Action: "SIGHUP (`upg.Upgrade`), until the new process wrote its PID file (`upg.Ready`)", Where: "on the host",
		Every: e.cfg.every, Margin: load.DefaultMargin,
	}
	swap := &Disruption{
		Key: "webapp-swap", Title: "webapp without systemd, webapp reload",
		Program: "webapp (`webapp serve --listen --control`)", Noun: "swap",
		Action: "`webapp reload --control PATH` (returns once the new generation serves)", Where: "on the host, no systemd",
		Every: e.cfg.every, Margin: load.DefaultMargin, ZeroFailures: true,
	}
	for _, m := range modes {
		plain.Runs = append(plain.Runs, plainRestartRun(t, e, m, n))
	}
	for _, m := range modes {
		flip.Runs = append(flip.Runs, flipRun(t, e, m, n))
	}
	for _, m := range modes {
		swap.Runs = append(swap.Runs, swapRun(t, e, m, n))
	}
	return []*Disruption{plain, flip, swap}
}

// plainRestartRun restarts plainhttp n times under load: stop (Shutdown),
// then start again, as a service manager does with a process that owns its
// socket.
func plainRestartRun(t *testing.T, e *benchEnv, mode load.Mode, n int) *load.Result {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(systemdtest.Port(t)))
	out := e.logFile(t, "plain-restart")
	var mu sync.Mutex
	cur, err := StartProc(e.bins.plain, plainArgs(addr), out, plainReady, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil {
			cur.Stop(syscall.SIGTERM, 30*time.Second)
		}
	}()
	res := disruptionRun(t, e, "http://"+addr+"/", mode, n, func(ctx context.Context, i int) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := cur.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		next, err := StartProc(e.bins.plain, plainArgs(addr), out, plainReady, 10*time.Second)
		if err != nil {
			cur = nil
			return fmt.Errorf("start: %w", err)
		}
		cur = next
		return nil
	})
	return res
}

// flipRun upgrades flipapp n times under load with SIGHUP; an upgrade is
// over when the new generation has written the PID file, which tableflip
// does in Ready, just before it tells the old one to exit.
func flipRun(t *testing.T, e *benchEnv, mode load.Mode, n int) *load.Result {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(systemdtest.Port(t)))
	pidFile := filepath.Join(t.TempDir(), "flipapp.pid")
	first, err := StartProc(e.bins.flip, []string{"--listen", addr, "--pid-file", pidFile}, e.logFile(t, "tableflip"), plainReady, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	gens := newGenerations(first)
	defer gens.stop(t, "tableflip")
	if err := waitPIDFile(pidFile, 0, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	res := disruptionRun(t, e, "http://"+addr+"/", mode, n, func(ctx context.Context, i int) error {
		old, err := readPID(pidFile)
		if err != nil {
			return err
		}
		if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
			return err
		}
		if err := waitPIDFile(pidFile, old, 30*time.Second); err != nil {
			return err
		}
		pid, _ := readPID(pidFile)
		gens.add(pid)
		return nil
	})
	return res
}

// generations tracks the processes of a server that replaces itself:
// only the first is our child, the later ones are stopped by PID.
type generations struct {
	first *Proc
	mu    sync.Mutex
	pids  map[int]bool
}

func newGenerations(first *Proc) *generations {
	return &generations{first: first, pids: map[int]bool{first.PID: true}}
}

func (g *generations) add(pid int) {
	g.mu.Lock()
	g.pids[pid] = true
	g.mu.Unlock()
}

// stop ends every generation seen, reporting those that do not stop.
func (g *generations) stop(t *testing.T, label string) {
	g.first.Stop(syscall.SIGTERM, 30*time.Second)
	g.mu.Lock()
	defer g.mu.Unlock()
	for pid := range g.pids {
		if err := stopPID(pid, 30*time.Second); err != nil {
			t.Errorf("%s: %v", label, err)
		}
	}
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitPIDFile waits until path names a PID other than old.
func waitPIDFile(path string, old int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pid, err := readPID(path)
		if err == nil && pid != old {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still names %d after %v (%v)", path, old, timeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var reloadedPID = regexp.MustCompile(`pid (\d+) is serving`)

// swapRun swaps webapp's binary n times under load without systemd, with
// the synchronous `webapp reload` over the control socket.
func swapRun(t *testing.T, e *benchEnv, mode load.Mode, n int) *load.Result {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(systemdtest.Port(t)))
	control := filepath.Join(t.TempDir(), "control.sock")
	first, err := StartProc(e.bins.webapp, []string{"serve", "--listen", addr, "--control", control}, e.logFile(t, "webapp-swap"), webappReady, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	gens := newGenerations(first)
	defer gens.stop(t, "webapp swap")
	res := disruptionRun(t, e, "http://"+addr+"/", mode, n, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, e.bins.webapp, "reload", "--control", control).CombinedOutput()
		if m := reloadedPID.FindSubmatch(out); m != nil {
			pid, _ := strconv.Atoi(string(m[1]))
			gens.add(pid)
		}
		if err != nil {
			return fmt.Errorf("webapp reload: %w: %s", err, strings.TrimSpace(string(out)))
		}
		if !reloadedPID.Match(out) {
			return errors.New("webapp reload: no new pid in its output: " + strings.TrimSpace(string(out)))
		}
		return nil
	})
	return res
}
