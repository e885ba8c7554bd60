package e2e

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/livetest"
)

// Long-lived connections under the real systemd: webapp's GET /ws
// (WebSocket echo) and GET /events (server-sent events), driven by
// Debian's python3-websockets and Python's http.client (package
// livetest), in several Python processes on the host.

// liveRun is the outcome of longLivedCycles.
type liveRun struct {
	cycles  []cycle
	res     *livetest.Result
	tot     livetest.Totals
	gens    []livetest.Generation // the new generation of each reload, from its return
	oldGone []time.Duration       // per reload: from its return until the old generation had exited
	oldLeft int                   // reloads whose old generation was still there after the bound
}

// longLivedCycles runs ws WebSocket and sse SSE clients against s while
// it runs reloads and restarts (every restartEvery-th cycle a restart;
// 0: none), one after another with a second between them, and returns
// what the clients saw. After each reload it waits (up to oldBound) for
// the old generation to exit.
func longLivedCycles(t *testing.T, s *service, ws, sse, cycles, restartEvery int, oldBound time.Duration) liveRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clients, err := livetest.Start(ctx, livetest.Options{Port: s.port, WS: ws, SSE: sse, PerProcess: 125})
	if err != nil {
		t.Fatal(err)
	}
	var run liveRun
	// The clients connect to the first generation.
	waitFor(t, 60*time.Second, "the clients to connect", func() (bool, string) {
		n, _ := s.connsHeldBy(ctx, s.port, s.mainPID(t))
		return n >= ws+sse, strconv.Itoa(n) + " connections"
	})
	if err := clients.WaitSettled(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for i := range cycles {
		verb := "reload"
		if restartEvery > 0 && i%restartEvery == restartEvery-1 {
			verb = "restart"
		}
		c := s.runCycle(ctx, verb)
		run.cycles = append(run.cycles, c)
		if c.Err != nil {
			t.Errorf("%s %d: %v: %s", verb, i, c.Err, c.Output)
			break
		}
		returned := c.Start.Add(c.Took)
		if verb == "reload" {
			run.gens = append(run.gens, livetest.Generation{PID: c.After, At: returned})
			for {
				ps, err := s.procsCtx(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(liveOnly(ps), func(p cgProc) bool { return p.PID == c.Before }) {
					break
				}
				if time.Since(returned) > oldBound {
					run.oldLeft++
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			run.oldGone = append(run.oldGone, time.Since(returned))
		}
		time.Sleep(time.Second)
	}
	time.Sleep(time.Second)
	run.res, err = clients.Stop(2 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	run.tot = run.res.Totals()
	return run
}

// TestLongLivedThroughReloadsAndRestarts: 500 WebSocket clients, each
// sending a numbered message every 100 ms and reconnecting (resending
// what was not echoed) when closed, and 100 SSE clients resuming with
// Last-Event-ID, through 20 `systemctl reload` and 5 `systemctl restart`:
// every close is 1001 with the closing handshake, no message is lost, no
// event id is missing or repeated, every client reaches every new
// generation, and each old generation exits soon after its reload
// returns instead of waiting out its 20 s drain deadline.
func TestLongLivedThroughReloadsAndRestarts(t *testing.T) {
	livetest.Require(t)
	const ws, sse, cycles = 500, 100, 25 // every fifth a restart
	s := startService(t, serviceOptions{})
	s.get(t, "/")
	run := longLivedCycles(t, s, ws, sse, cycles, 5, 10*time.Second)
	tot := run.tot
	lat, never := run.res.Reconnects(run.gens)
	slices.Sort(run.oldGone)
	t.Logf("%d reloads and restarts; %v", len(run.cycles), tot)
	t.Logf("reconnect to the new pid after a reload returned: median %v, p90 %v, max %v (%d client reloads)",
		livetest.Quantile(lat, 0.5).Round(time.Millisecond), livetest.Quantile(lat, 0.9).Round(time.Millisecond), livetest.Quantile(lat, 1).Round(time.Millisecond), len(lat))
	t.Logf("old generation exited after a reload returned: median %v, max %v", livetest.Quantile(run.oldGone, 0.5).Round(time.Millisecond), livetest.Quantile(run.oldGone, 1).Round(time.Millisecond))
	if len(run.cycles) != cycles {
		t.Fatalf("%d of %d reloads and restarts ran", len(run.cycles), cycles)
	}
	if tot.WS != ws || tot.SSE != sse {
		t.Fatalf("reports of %d WebSocket and %d SSE clients, want %d and %d", tot.WS, tot.SSE, ws, sse)
	}
	if tot.Abnormal != 0 || tot.ConnectErrors != 0 {
		t.Errorf("%d abnormal closes, %d connect errors, want 0: %q", tot.Abnormal, tot.ConnectErrors, tot.Examples)
	}
	if tot.Lost != 0 || tot.Dup != 0 || tot.Echoed != tot.Sent {
		t.Errorf("WebSocket messages: %d sent, %d echoed, %d lost, %d echoed twice; want every one echoed once", tot.Sent, tot.Echoed, tot.Lost, tot.Dup)
	}
	// One 1001 per client per generation change.
	if tot.Clean != ws*cycles {
		t.Errorf("%d clean closes (1001 with the handshake), want %d: one per client per reload or restart", tot.Clean, ws*cycles)
	}
	if never != 0 {
		t.Errorf("%d (client, reload) pairs where the client never reached the new generation", never)
	}
	if tot.Missing != 0 || tot.Repeated != 0 || tot.SSEErrors != 0 {
		t.Errorf("SSE: %d ids missing, %d repeated, %d errors, want 0: %q", tot.Missing, tot.Repeated, tot.SSEErrors, tot.Examples)
	}
	if tot.Streams < sse*(cycles+1) {
		t.Errorf("SSE: %d streams, want at least %d: every client resumed after every reload and restart", tot.Streams, sse*(cycles+1))
	}
	// Bounds for a loaded machine, not the measure (logged above): the
	// drain deadline is 20 s, so an old generation that waited for its
	// long-lived connections would be there for that long.
	if run.oldLeft != 0 {
		t.Errorf("%d old generations still running 10 s after their reload returned", run.oldLeft)
	}
	if m := livetest.Quantile(lat, 0.5); m > 5*time.Second {
		t.Errorf("median reconnect to the new generation %v after the reload returned, want well within its drain", m)
	}
	j := s.journal(t)
	if strings.Contains(j, "cut at the deadline") {
		t.Errorf("a generation cut connections at its drain deadline:\n%s", lastLine(j, "cut at the deadline"))
	}
}

// TestLongLivedContrast: the same clients with webapp's drain signal
// switched off (WEBAPP_IGNORE_DRAIN=1, a test switch): /ws and /events
// no longer end at a drain, so every old generation holds them to its
// deadline (--drain-timeout=2s here) and cuts them: the WebSocket clients
// see abnormal closures (1006, no close frame), and the old generations
// outlive their reload by the deadline.
func TestLongLivedContrast(t *testing.T) {
	livetest.Require(t)
	const ws, sse, cycles = 100, 20, 3
	s := startService(t, serviceOptions{ServiceDropIn: "Environment=WEBAPP_IGNORE_DRAIN=1 WEBAPP_OPTS=--drain-timeout=2s"})
	s.get(t, "/")
	run := longLivedCycles(t, s, ws, sse, cycles, 0, 10*time.Second)
	tot := run.tot
	slices.Sort(run.oldGone)
	t.Logf("without the drain signal, %d reloads: %v; old generation exited after a reload returned: median %v",
		len(run.cycles), tot, livetest.Quantile(run.oldGone, 0.5).Round(time.Millisecond))
	if tot.Abnormal < ws*cycles/2 {
		t.Errorf("%d abnormal closes without the drain signal, want most of the %d (the contrast)", tot.Abnormal, ws*cycles)
	}
	if tot.Clean != 0 {
		t.Errorf("%d clean closes without the drain signal, want 0", tot.Clean)
	}
	if m := livetest.Quantile(run.oldGone, 0.5); m < 1500*time.Millisecond {
		t.Errorf("old generations exited %v after the reload without the drain signal, want them held to the 2 s deadline", m)
	}
	if !strings.Contains(s.journal(t), "cut at the deadline") {
		t.Errorf("no generation cut connections at its deadline without the drain signal")
	}
}

// TestLongLivedStop: `systemctl stop` with TimeoutStopSec=5s (and
// --stop-timeout=5s to match), 500 WebSocket clients and one client that
// ignores close frames: systemd never kills (no SIGKILL, Result=success),
// the 500 close cleanly with 1001, the stubborn one is cut at webapp's
// deadline and counted, STATUS= counted the long-lived connections, and
// systemd received EXTEND_TIMEOUT_USEC= (its debug log shows each
// notification).
func TestLongLivedStop(t *testing.T) {
	livetest.Require(t)
	const ws = 500
	s := startService(t, serviceOptions{ServiceDropIn: "TimeoutStopSec=5s\nEnvironment=WEBAPP_OPTS=--stop-timeout=5s"})
	s.get(t, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	clients, err := livetest.Start(ctx, livetest.Options{Port: s.port, WS: ws, Stubborn: 1, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	pid := s.mainPID(t)
	waitFor(t, 60*time.Second, "the clients to connect", func() (bool, string) {
		n, _ := s.connsHeldBy(ctx, s.port, pid)
		return n >= ws+1, strconv.Itoa(n) + " connections"
	})
	// Each WebSocket hijacked, not only accepted: the drain counts them all.
	if err := clients.WaitSettled(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.box.Systemctl(t, "log-level", "debug")
	took := s.timedSystemctl(t, "stop", "webapp.service")
	s.box.Systemctl(t, "log-level", "info")
	res, err := clients.Stop(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tot := res.Totals()
	t.Logf("systemctl stop took %v; %v; stubborn: %+v", took.Round(time.Millisecond), tot, res.Stubborn)

	p := s.show(t, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainCode"] != "1" || p["ExecMainStatus"] != "3" {
		t.Errorf("webapp.service after the stop: %v, want inactive, Result=success, exited by itself with status 3 (cut, SuccessExitStatus=3)", p)
	}
	if tot.WS != ws || tot.Clean != ws || tot.Abnormal != 0 {
		t.Errorf("WebSocket clients at the stop: %v, want %d clean closes (1001), none abnormal (%q)", tot, ws, tot.Examples)
	}
	if len(res.Stubborn) != 1 || !res.Stubborn[0].Connected || !res.Stubborn[0].Cut || res.Stubborn[0].CloseFrames == 0 {
		t.Errorf("stubborn client: %+v, want connected, sent a close frame, then cut", res.Stubborn)
	}
	j := s.journalWith(t, "connections cut at the deadline")
	if bad := killedBySystemd(j); len(bad) > 0 || strings.Contains(j, "Killing process") {
		t.Errorf("systemd had to end the stop: %q", bad)
	}
	if !regexp.MustCompile(`stopped after [^:]+: 1 connections cut at the deadline`).MatchString(j) {
		t.Errorf("webapp's journal does not count the stubborn connection as cut:\n%s", lastLine(j, "stopp"))
	}
	// 500 WebSockets and the stubborn one, all hijacked.
	if m := regexp.MustCompile(`stopping: draining \d+ connections, (\d+) long-lived`).FindStringSubmatch(j); m == nil || m[1] != strconv.Itoa(ws+1) {
		t.Errorf("webapp's journal does not count %d long-lived connections at the stop:\n%s", ws+1, lastLine(j, "stopping"))
	}
	all := s.box.Journal(t, "-o", "cat")
	var extends, statuses []string
	for _, l := range strings.Split(all, "\n") {
		if !strings.Contains(l, "Got notification message") {
			continue
		}
		if strings.Contains(l, "EXTEND_TIMEOUT_USEC=") {
			extends = append(extends, l)
		}
		if strings.Contains(l, "STATUS=draining:") {
			statuses = append(statuses, l)
		}
	}
	t.Logf("systemd received %d notifications with EXTEND_TIMEOUT_USEC=, %d with STATUS=draining: %s", len(extends), len(statuses), lastLine(strings.Join(extends, "\n"), "EXTEND"))
	if len(extends) == 0 {
		t.Errorf("systemd's debug log has no notification with EXTEND_TIMEOUT_USEC=")
	}
	if !slices.ContainsFunc(statuses, func(l string) bool { return strings.Contains(l, "1 long-lived") }) {
		t.Errorf("no STATUS= counted the stubborn connection alone during the drain: %q", statuses)
	}
	// The drain ends at --stop-timeout less a second; a bound for a
	// loaded machine, below TimeoutStopSec=5s plus what the extensions
	// announced.
	if took < 3*time.Second || took > 12*time.Second {
		t.Errorf("systemctl stop took %v, want about the 4 s deadline", took)
	}
}

// TestLongLivedStopExtends: systemd honours the extensions. With
// TimeoutStopSec=3s (and --stop-timeout=3s: webapp's deadline 2.4 s),
// six WebSocket clients answer the close frame one after another, 0.6 s
// apart, the last 3.6 s into the stop: webapp moves its deadline on while
// they leave and says so (EXTEND_TIMEOUT_USEC=), so the stop outlasts
// TimeoutStopSec= without a SIGKILL, every client completes its close,
// nothing is cut, and the stop succeeds. (TestLongLivedStop has the
// client that never leaves, cut at the deadline.)
func TestLongLivedStopExtends(t *testing.T) {
	livetest.Require(t)
	s := startService(t, serviceOptions{ServiceDropIn: "TimeoutStopSec=3s\nEnvironment=WEBAPP_OPTS=--stop-timeout=3s"})
	s.get(t, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const slow = 6
	clients, err := livetest.Start(ctx, livetest.Options{Port: s.port, Slow: slow, SlowStep: 600 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pid := s.mainPID(t)
	waitFor(t, 60*time.Second, "the clients to connect", func() (bool, string) {
		n, _ := s.connsHeldBy(ctx, s.port, pid)
		return n >= slow, strconv.Itoa(n) + " connections"
	})
	if err := clients.WaitSettled(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	took := s.timedSystemctl(t, "stop", "webapp.service")
	res, err := clients.Stop(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p := s.show(t, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
	t.Logf("systemctl stop took %v with TimeoutStopSec=3s; webapp.service after it: %v", took.Round(time.Millisecond), p)
	if p["Result"] != "success" || p["ExecMainCode"] != "1" || p["ExecMainStatus"] != "0" {
		t.Errorf("webapp.service after the stop: %v, want Result=success, exited by itself with status 0", p)
	}
	j := s.journalWith(t, "stopped after")
	if bad := killedBySystemd(j); len(bad) > 0 || strings.Contains(j, "Killing process") {
		t.Errorf("systemd had to end the stop: %q", bad)
	}
	if !strings.Contains(j, "no connection cut") {
		t.Errorf("webapp's journal does not say the stop cut nothing:\n%s", lastLine(j, "stopp"))
	}
	if !strings.Contains(j, "still leaving: deadline moved to") {
		t.Errorf("webapp's journal does not say it moved its deadline:\n%s", j)
	}
	answered := 0
	for _, c := range res.Stubborn {
		if c.Slow && c.Connected && !c.AnsweredAt.IsZero() {
			answered++
		} else {
			t.Errorf("slow client %+v: want connected, its close answered", c)
		}
	}
	if answered != slow {
		t.Errorf("%d slow clients answered their close, want %d", answered, slow)
	}
	// Past TimeoutStopSec=, which only the extensions allow.
	if took < 3500*time.Millisecond {
		t.Errorf("systemctl stop took %v, want it past TimeoutStopSec=3s (the last client left at 3.6 s)", took)
	}
}
