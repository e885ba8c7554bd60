package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// The start/stop/restart half of the lifecycle (DESIGN.md, "The
// lifecycle", 1, 2 and 5) against a real systemd. Tests that only wait on
// systemd run in parallel; the two under load run alone, so that their
// latencies are not another test's.

// TestLifecycleSocketActivation: the first connection to webapp.socket
// starts webapp.service, which takes its listener by the name the socket
// gives it and refuses a socket named otherwise.
func TestLifecycleSocketActivation(t *testing.T) { onEachSystemd(t, testLifecycleSocketActivation) }

func testLifecycleSocketActivation(t *testing.T, sd systemdtest.Systemd) {
	t.Parallel()
	tests := []struct {
		name   string
		fdName string // FileDescriptorName= of webapp.socket
		serves bool
		want   []string // in the journal of webapp.service
	}{
		{name: "named http", fdName: "http", serves: true, want: []string{"serving http on", "(systemd)"}},
		{name: "named admin", fdName: "admin", serves: false, want: []string{"unexpected name", `LISTEN_FDNAMES=\"admin\"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startService(t, serviceOptions{Systemd: sd, NoStart: true})
			s.box.WriteFile(t, "/etc/systemd/system/webapp.socket.d/name.conf",
				[]byte("[Socket]\nFileDescriptorName="+tt.fdName+"\n"), 0o644)
			s.box.Systemctl(t, "daemon-reload")
			s.box.Systemctl(t, "start", "webapp.socket")
			if p := s.box.Show(t, "webapp.socket", "ActiveState", "SubState"); p["SubState"] != "listening" {
				t.Fatalf("webapp.socket after start: %v, want listening", p)
			}
			if p := s.show(t, "ActiveState"); p["ActiveState"] != "inactive" {
				t.Fatalf("webapp.service before the first connection: ActiveState=%s, want inactive", p["ActiveState"])
			}

			r := <-s.getAsync("/", 5*time.Second)
			p := s.show(t, "ActiveState", "SubState", "MainPID", "StatusText", "Result")
			j := s.journalWith(t, tt.want...)
			if w := missing(j, tt.want...); w != "" {
				t.Errorf("journal of webapp.service lacks %q:\n%s", w, j)
			}
			if !tt.serves {
				if r.err == nil {
					t.Errorf("GET / = %d %q, want no answer from a webapp given an fd named %q", r.status, r.body, tt.fdName)
				}
				// Restart=on-failure retries until the start limit.
				waitFor(t, 15*time.Second, "webapp.service to fail", func() (bool, string) {
					p = s.show(t, "ActiveState", "Result", "StatusText")
					return p["ActiveState"] == "failed", fmt.Sprint(p)
				})
				if !strings.HasPrefix(p["StatusText"], "start failed: ") {
					t.Errorf("StatusText=%q, want webapp's \"start failed: …\"", p["StatusText"])
				}
				t.Logf("with FileDescriptorName=%s: GET / = %v; webapp.service %v", tt.fdName, r.err, p)
				return
			}
			if r.err != nil || r.status != 200 || r.body != "hello world\n" {
				t.Fatalf("GET / = %d %q, %v, want 200 hello world", r.status, r.body, r.err)
			}
			if p["ActiveState"] != "active" || p["SubState"] != "running" {
				t.Errorf("webapp.service after the first connection: %v, want active/running", p)
			}
			resp, _ := s.get(t, "/")
			if got := resp.Header.Get(load.PIDHeader); got != p["MainPID"] || got == "" || got == "0" {
				t.Errorf("GET / answered by pid %q, want MainPID=%s", got, p["MainPID"])
			}
			wantStatus := fmt.Sprintf("(systemd), pid %s,", p["MainPID"])
			if !strings.HasPrefix(p["StatusText"], "serving http on 127.0.0.1:") || !strings.Contains(p["StatusText"], wantStatus) {
				t.Errorf("StatusText=%q, want webapp's \"serving http on 127.0.0.1:… %s …\"", p["StatusText"], wantStatus)
			}
		})
	}
}

// TestLifecycleStopDrains: `systemctl stop` with a 2 s request in flight
// waits for it, and webapp, not systemd, ends the stop.
func TestLifecycleStopDrains(t *testing.T) { onEachSystemd(t, testLifecycleStopDrains) }

func testLifecycleStopDrains(t *testing.T, sd systemdtest.Systemd) {
	t.Parallel()
	s := startService(t, serviceOptions{Systemd: sd})
	s.get(t, "/") // starts webapp.service; its connection closes
	start := time.Now()
	inflight := s.getInFlight(t, "/slow?ms=2000", 15*time.Second)
	stopTook := s.timedSystemctl(t, "stop", "webapp.service")
	stopped := time.Now()

	r := <-inflight
	if r.err != nil || r.status != 200 || r.body != "slept 2000 ms\n" {
		t.Errorf("GET /slow?ms=2000 during stop = %d %q, %v, want 200 slept 2000 ms", r.status, r.body, r.err)
	}
	// The stop waits for the request: the answer is written 2 s after the
	// request arrived, webapp exits after writing it, and systemctl stop
	// returns after webapp has exited. (When this test's goroutine sees the
	// answer is up to the scheduler, so that is not compared.) That it ends
	// with the request, not at a timeout, the journal says below: the
	// drain's own "no connection cut", and no SIGKILL by systemd.
	total := stopped.Sub(start)
	if r.err == nil && total < 2*time.Second {
		t.Errorf("systemctl stop returned %v after the 2 s request was sent, before it could have been answered", total)
	}
	t.Logf("systemctl stop took %v (request took %v; request start to unit stopped %v; stop returned %v after the request ended)",
		stopTook, r.took, total, stopped.Sub(r.done))
	p := s.show(t, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		t.Errorf("webapp.service after stop: %v, want inactive, Result=success, ExecMainStatus=0", p)
	}
	j := s.journalWith(t, "stopping: draining 1 connections", "no connection cut")
	if bad := killedBySystemd(j); len(bad) > 0 {
		t.Errorf("systemd had to end the stop: %q\n%s", bad, j)
	}
	t.Logf("the stop in the journal:\n%s", s.box.Journal(t, "-u", "webapp.service", "-o", "short-monotonic"))
	if w := missing(j, "stopping: draining 1 connections", "no connection cut"); w != "" {
		t.Errorf("journal lacks %q:\n%s", w, j)
	}
}

// TestLifecycleStopDeadline: a request longer than --drain-timeout is cut
// by webapp at its own deadline, well before TimeoutStopSec=; systemd
// never has to kill it.
func TestLifecycleStopDeadline(t *testing.T) {
	t.Parallel()
	const drainTimeout = 2 * time.Second
	s := startService(t, serviceOptions{ServiceDropIn: "Environment=WEBAPP_OPTS=--drain-timeout=" + drainTimeout.String()})
	s.get(t, "/")
	inflight := s.getInFlight(t, "/slow?ms=30000", 20*time.Second)
	stopTook := s.timedSystemctl(t, "stop", "webapp.service")

	r := <-inflight
	if r.err == nil {
		t.Errorf("GET /slow?ms=30000 during stop = %d %q, want it cut at the drain deadline", r.status, r.body)
	}
	t.Logf("systemctl stop took %v; the cut request ended after %v with %v", stopTook, r.took, r.err)
	// At least the drain deadline, and well before TimeoutStopSec=30s
	// (a generous bound for a loaded machine: about 2.1 s is usual).
	timeoutStop := s.show(t, "TimeoutStopUSec")["TimeoutStopUSec"]
	if stopTook < drainTimeout-100*time.Millisecond || stopTook > drainTimeout+10*time.Second {
		t.Errorf("systemctl stop took %v, want about --drain-timeout=%v (TimeoutStopSec=%s)", stopTook, drainTimeout, timeoutStop)
	}
	// webapp exits by itself (CLD_EXITED = 1), with status 1 to say that it
	// had to cut connections.
	p := s.show(t, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
	t.Logf("webapp.service after the stop: %v", p)
	if p["ExecMainCode"] != "1" || p["Result"] == "timeout" || p["Result"] == "signal" {
		t.Errorf("webapp.service after stop: %v, want its main process to have exited by itself (ExecMainCode=1)", p)
	}
	j := s.journalWith(t, "stopping: draining 1 connections", "1 connections cut at the deadline")
	if bad := killedBySystemd(j); len(bad) > 0 {
		t.Errorf("systemd had to end the stop: %q\n%s", bad, j)
	}
	if w := missing(j, "stopping: draining 1 connections", "1 connections cut at the deadline"); w != "" {
		t.Errorf("journal lacks %q:\n%s", w, j)
	}
}

// TestLifecycleRestartUnderLoad: `systemctl restart webapp.service` while
// 32 clients send requests fails none of them, in either client mode: the
// socket that systemd holds queues new connections while no webapp runs.
func TestLifecycleRestartUnderLoad(t *testing.T) { onEachSystemd(t, testLifecycleRestartUnderLoad) }

func testLifecycleRestartUnderLoad(t *testing.T, sd systemdtest.Systemd) {
	const restarts = 10
	for _, mode := range []load.Mode{load.KeepAlive, load.NewConnection} {
		t.Run(mode.String(), func(t *testing.T) {
			s := startService(t, serviceOptions{Systemd: sd})
			s.get(t, "/")
			gens := []string{s.mainPID(t)}
			res := restartUnderLoad(t, s, "webapp.service", mode, restarts, &gens)
			if res.Failed() != 0 || res.Aborted != 0 {
				t.Errorf("restart webapp.service ×%d under load (%s): %d failed (%+v), %d aborted, want 0\n%s",
					restarts, mode, res.Failed(), res.Failures, res.Aborted, res)
			}
			// Each restart made a generation of its own; only those
			// answered, the first and the last among them. Whether a
			// short-lived one in between reached a client is the
			// scheduler's choice.
			if distinct := len(slices.Compact(slices.Sorted(slices.Values(gens)))); len(gens) != restarts+1 || distinct != restarts+1 {
				t.Errorf("MainPID after each restart: %v, want %d distinct generations", gens, restarts+1)
			}
			for pid := range res.PIDs {
				if !slices.Contains(gens, pid) {
					t.Errorf("answers from pid %s, not a generation %v", pid, gens)
				}
			}
			if first, last := gens[0], gens[len(gens)-1]; res.PIDs[first] == 0 || res.PIDs[last] == 0 {
				t.Errorf("answers from %v, want the first generation %s and the last %s among them", res.PIDs, first, last)
			}
			t.Logf("%d of %d generations answered the load", len(res.PIDs), len(gens))
			p := s.show(t, "ActiveState", "Result", "NRestarts")
			if p["ActiveState"] != "active" || p["Result"] != "success" {
				t.Errorf("webapp.service after the restarts: %v, want active, Result=success", p)
			}
			if bad := killedBySystemd(s.journal(t)); len(bad) > 0 {
				t.Errorf("systemd had to end a stop: %q", bad)
			}
		})
	}
}

// TestLifecycleSocketRestartResets is the contrast: restarting
// webapp.socket closes the listening socket, so the same load sees
// connections refused or reset. It shows that the load generator sees
// what a service restart would lose.
func TestLifecycleSocketRestartResets(t *testing.T) {
	const restarts = 3
	for _, mode := range []load.Mode{load.KeepAlive, load.NewConnection} {
		t.Run(mode.String(), func(t *testing.T) {
			s := startService(t, serviceOptions{})
			s.get(t, "/")
			res := restartUnderLoad(t, s, "webapp.socket", mode, restarts, nil)
			if res.Failed() == 0 {
				t.Errorf("restart webapp.socket ×%d under load (%s): 0 failed, want some refused or reset\n%s", restarts, mode, res)
			}
			if n := res.Failures.Refused + res.Failures.Reset + res.Failures.EOF; n == 0 {
				t.Errorf("restart webapp.socket: failures %+v, want refused, reset or eof among them", res.Failures)
			}
		})
	}
}

// restartUnderLoad runs `systemctl restart unit` n times, 2.5 s apart,
// under 32 clients in mode, logs the numbers and returns them. If
// mainPIDs is not nil, webapp.service's MainPID after each restart is
// appended to it.
func restartUnderLoad(t *testing.T, s *service, unit string, mode load.Mode, n int, mainPIDs *[]string) *load.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restart := s.disrupt("restart", unit)
	run := func(ctx context.Context, i int) error {
		if err := restart(ctx, i); err != nil || mainPIDs == nil {
			return err
		}
		p, err := s.showCtx(ctx, "MainPID")
		if err != nil {
			return err
		}
		*mainPIDs = append(*mainPIDs, p["MainPID"])
		return nil
	}
	res, err := load.Run(ctx, s.url+"/", load.Options{
		Clients:  32,
		Mode:     mode,
		Duration: 90 * time.Second,
		Tail:     time.Second,
		Margin:   500 * time.Millisecond,
		Schedule: load.Schedule{Start: time.Second, Every: 2500 * time.Millisecond, Count: n, Run: run},
	})
	if err != nil {
		t.Fatalf("load.Run(%s, %s) = %v", s.url, mode, err)
	}
	for _, e := range res.Events {
		if e.Err != nil {
			t.Errorf("systemctl restart %s (event %d) = %v", unit, e.Index, e.Err)
		}
	}
	if len(res.Events) != n {
		t.Errorf("load.Run ran %d restarts, want %d", len(res.Events), n)
	}
	t.Logf("systemctl restart %s ×%d, %d %s clients: %d requests in %v, %d failed %+v\n"+
		"latency p50 %v p99 %v max %v; steady p50 %v p99 %v; worst added per restart %v\n%s",
		unit, n, res.Clients, mode, res.Requests, res.Elapsed.Round(time.Millisecond), res.Failed(), res.Failures,
		res.Latency.P50, res.Latency.P99, res.Latency.Max, res.Steady.P50, res.Steady.P99, worstAdded(res), eventTable(res))
	if len(res.FailureDetails) > 0 {
		t.Logf("failures:\n%s", res)
	}
	return res
}

// TestLifecycleWatchdog: with WatchdogSec= a healthy webapp keeps pinging
// and is left alone; one whose health check fails stops pinging and
// systemd restarts it with Result=watchdog.
func TestLifecycleWatchdog(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	t.Run("healthy", func(t *testing.T) {
		t.Parallel()
		s := startService(t, serviceOptions{ServiceDropIn: fmt.Sprintf("WatchdogSec=%v", interval)})
		resp, _ := s.get(t, "/")
		pid := resp.Header.Get(load.PIDHeader)
		before := s.show(t, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
		time.Sleep(3*interval + interval/2)
		p := s.show(t, "ActiveState", "MainPID", "NRestarts", "WatchdogUSec", "WatchdogTimestampMonotonic")
		if p["ActiveState"] != "active" || p["NRestarts"] != "0" || p["MainPID"] != pid {
			t.Errorf("after %v with WatchdogSec=%v: %v, want active, NRestarts=0, MainPID=%s", 3*interval+interval/2, interval, p, pid)
		}
		if p["WatchdogTimestampMonotonic"] == before {
			t.Errorf("WatchdogTimestampMonotonic stayed %s over 3 intervals, want pings to move it", before)
		}
		j := s.journalWith(t, "watchdog: pinging every 500ms while healthy")
		if strings.Contains(j, "Watchdog timeout") {
			t.Errorf("healthy webapp hit the watchdog:\n%s", j)
		}
		if w := missing(j, "watchdog: pinging every 500ms while healthy"); w != "" {
			t.Errorf("journal lacks %q:\n%s", w, j)
		}
	})
	t.Run("unhealthy", func(t *testing.T) {
		t.Parallel()
		// RestartSec= long enough to see the failed run's Result.
		s := startService(t, serviceOptions{ServiceDropIn: fmt.Sprintf(
			"WatchdogSec=%v\nRestartSec=3s\nEnvironment=WEBAPP_FAIL_HEALTH_AFTER=1s", interval)})
		resp, _ := s.get(t, "/")
		pid := resp.Header.Get(load.PIDHeader)
		var p map[string]string
		waitFor(t, 10*time.Second, "the watchdog to end webapp", func() (bool, string) {
			p = s.show(t, "ActiveState", "SubState", "Result", "NRestarts")
			return p["SubState"] == "auto-restart", fmt.Sprint(p)
		})
		if p["Result"] != "watchdog" {
			t.Errorf("webapp.service waiting to restart: %v, want Result=watchdog", p)
		}
		waitFor(t, 10*time.Second, "systemd to restart webapp", func() (bool, string) {
			p = s.show(t, "ActiveState", "SubState", "MainPID", "NRestarts")
			return p["ActiveState"] == "active" && p["NRestarts"] == "1", fmt.Sprint(p)
		})
		if p["MainPID"] == pid {
			t.Errorf("after the watchdog restart MainPID=%s, want a new one", p["MainPID"])
		}
		want := []string{"watchdog: health check failed, not pinging", "Watchdog timeout", "Failed with result 'watchdog'"}
		j := s.journalWith(t, want...)
		if w := missing(j, want...); w != "" {
			t.Errorf("journal lacks %q:\n%s", w, j)
		}
	})
}

// TestLifecycleJournalPriorities: `journalctl -p warning` shows webapp's
// warnings (a failing health check) and errors (connections cut by a
// drain) and none of its info lines.
func TestLifecycleJournalPriorities(t *testing.T) {
	t.Parallel()
	// The health check fails from its second run (4 s after start), 4 s
	// before the watchdog would act; a 30 s request outlives the drain.
	s := startService(t, serviceOptions{ServiceDropIn: "WatchdogSec=8s\n" +
		"Environment=WEBAPP_FAIL_HEALTH_AFTER=500ms\n" +
		`Environment="WEBAPP_OPTS=--drain-timeout=1s --idle-grace=100ms"`})
	s.get(t, "/")
	inflight := s.getAsync("/slow?ms=30000", 20*time.Second)
	waitFor(t, 15*time.Second, "webapp's health check warning", func() (bool, string) {
		j := s.journal(t)
		return strings.Contains(j, "health check failed"), j
	})
	s.box.Systemctl(t, "stop", "webapp.service")
	<-inflight

	tests := []struct {
		line string
		warn bool // at warning or higher
	}{
		{"watchdog: health check failed, not pinging", true},
		{"1 connections cut at the deadline", true},
		{"serving http on", false},
		{"watchdog: pinging every", false},
		{"stopping: draining 1 connections", false},
	}
	var lines []string
	for _, tt := range tests {
		lines = append(lines, tt.line)
	}
	all := s.journalWith(t, lines...)
	warn := s.box.Journal(t, "-u", "webapp", "-p", "warning", "-o", "cat")
	for _, tt := range tests {
		if !strings.Contains(all, tt.line) {
			t.Errorf("journalctl -u webapp lacks %q:\n%s", tt.line, all)
			continue
		}
		if got := strings.Contains(warn, tt.line); got != tt.warn {
			t.Errorf("journalctl -u webapp -p warning shows %q = %t, want %t:\n%s", tt.line, got, tt.warn, warn)
		}
	}
	if strings.Contains(all, "Watchdog timeout") {
		t.Errorf("the watchdog acted before the stop; the test needs a longer WatchdogSec=:\n%s", all)
	}
}
