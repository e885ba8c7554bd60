package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// reloadEvent is what one reload of TestReloadUnderLoad saw.
type reloadEvent struct {
	Version       string // installed before the reload
	Before, After string // MainPID
	Reload        reloadOutcome
	Fresh         freshAnswer // GET / on a new connection after the reload
	Err           error       // reading MainPID, installing
}

// TestReloadUnderLoad: 25 `systemctl reload webapp` under 32 clients, in
// keep-alive and new-connection mode, each reload installing a build that
// reports another version first. No request fails; two 2 s requests in
// flight at each reload complete on the old generation; MainPID changes
// every time and the new version answers; systemd never restarts webapp.
func TestReloadUnderLoad(t *testing.T) { onEachSystemd(t, testReloadUnderLoad) }

func testReloadUnderLoad(t *testing.T, sd systemdtest.Systemd) {
	const slowMS = 2000
	// 25 reloads per client mode under the host's systemd (make bench runs
	// 20 per mode with more clients); 10 under Debian 13's, where
	// TestNotifyReload runs 20 more through the same ExecReload= client:
	// `make test` stays within its budget.
	reloads := 25
	if sd.Root != "" {
		reloads = 10
	}
	versions := []string{"2.0.0-e2e-a", "2.0.0-e2e-b"}
	bins := map[string]string{}
	for _, v := range versions {
		bins[v] = buildWebapp(t, v)
	}
	for _, mode := range []load.Mode{load.KeepAlive, load.NewConnection} {
		t.Run(mode.String(), func(t *testing.T) {
			s := startService(t, serviceOptions{Systemd: sd})
			first, _ := s.get(t, "/")
			startPID := first.Header.Get("X-Webapp-Pid")

			events := make([]reloadEvent, reloads)
			type slowReq struct {
				event int
				a     freshAnswer
			}
			var (
				slowMu sync.Mutex
				slows  []slowReq
				slowWG sync.WaitGroup
			)
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			res, err := load.Run(ctx, s.url+"/", load.Options{
				Clients:  32,
				Mode:     mode,
				Duration: 3 * time.Minute, // a bound: Tail ends the load
				Timeout:  5 * time.Second,
				Tail:     3 * time.Second,
				Schedule: load.Schedule{
					Start: 3 * time.Second,
					Every: time.Second,
					Count: reloads,
					Run: func(ctx context.Context, i int) error {
						ev := &events[i]
						if i == 0 {
							p, err := s.showCtx(ctx, "MainPID")
							if err != nil {
								ev.Err = err
								return err
							}
							ev.Before = p["MainPID"]
						} else {
							ev.Before = events[i-1].After
						}
						ev.Version = versions[i%len(versions)]
						if err := s.swapBinary(bins[ev.Version]); err != nil {
							ev.Err = err
							return err
						}
						dialed := make(chan int, 2)
						for range 2 {
							slowWG.Add(1)
							go func() {
								defer slowWG.Done()
								a := getFreshFrom(context.Background(), fmt.Sprintf("%s/slow?ms=%d", s.url, slowMS), func(p int) { dialed <- p })
								slowMu.Lock()
								slows = append(slows, slowReq{i, a})
								slowMu.Unlock()
							}()
						}
						// The old generation takes them before the reload.
						if err := s.waitAccepted(ctx, 10*time.Second, ev.Before, <-dialed, <-dialed); err != nil {
							ev.Err = err
							return err
						}
						ev.Reload = s.reload(ctx)
						p, err := s.showCtx(ctx, "MainPID")
						if err != nil {
							ev.Err = err
							return err
						}
						ev.After = p["MainPID"]
						if err := s.waitStoppedAccepting(ctx, 10*time.Second, ev.Before); err != nil {
							ev.Err = err
							return err
						}
						ev.Fresh = getFresh(ctx, s.url+"/")
						return ev.Reload.Err
					},
				},
			})
			slowWG.Wait()
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if res.Failed() != 0 {
				t.Errorf("%s", describeFailures(res))
			}
			if len(res.Events) != reloads {
				t.Fatalf("%d reloads ran, want %d", len(res.Events), reloads)
			}

			var walls []time.Duration
			for i, ev := range events {
				walls = append(walls, ev.Reload.Took)
				switch {
				case ev.Err != nil:
					t.Errorf("reload %d: %v", i, ev.Err)
				case ev.Reload.Err != nil:
					t.Errorf("reload %d: systemctl reload: %v\n%s", i, ev.Reload.Err, ev.Reload.Output)
				case ev.After == ev.Before:
					t.Errorf("reload %d: MainPID stayed %s", i, ev.Before)
				case ev.Fresh.Err != nil || ev.Fresh.Status != 200:
					t.Errorf("reload %d: GET / after it: %v, status %d", i, ev.Fresh.Err, ev.Fresh.Status)
				case ev.Fresh.PID != ev.After || ev.Fresh.Version != ev.Version:
					t.Errorf("reload %d: GET / after it answered by pid %s version %s, want MainPID %s version %s",
						i, ev.Fresh.PID, ev.Fresh.Version, ev.After, ev.Version)
				}
			}
			if len(slows) != 2*reloads {
				t.Errorf("%d slow requests, want %d", len(slows), 2*reloads)
			}
			for _, sr := range slows {
				if err := slowOK(sr.a, slowMS); err != nil {
					t.Errorf("reload %d: /slow?ms=%d in flight: %v", sr.event, slowMS, err)
				} else if want := events[sr.event].Before; sr.a.PID != want {
					t.Errorf("reload %d: /slow?ms=%d in flight answered by pid %s, want the old generation %s",
						sr.event, slowMS, sr.a.PID, want)
				}
			}
			p := s.show(t, "NRestarts", "ActiveState", "SubState", "MainPID")
			if p["NRestarts"] != "0" || p["ActiveState"] != "active" || p["SubState"] != "running" {
				t.Errorf("after %d reloads: %v, want active/running with NRestarts=0", reloads, p)
			}
			if ps, ok := s.waitOnlyMain(t, 15*time.Second); !ok {
				t.Errorf("old generations still running 15 s after the last reload (MainPID %s):\n%v", p["MainPID"], ps)
			}
			// Each generation answered its fresh GET above; which of them the
			// load's clients reached is the scheduler's choice, but no other
			// process answered.
			gens := map[string]bool{startPID: true}
			for _, ev := range events {
				gens[ev.After] = true
			}
			for pid := range res.PIDs {
				if !gens[pid] {
					t.Errorf("the load was answered by pid %s, not a generation of the reloads (%v)", pid, res.PIDs)
				}
			}
			if res.PIDs[startPID] == 0 {
				t.Errorf("the first generation %s answered nothing: %v", startPID, res.PIDs)
			}
			if strings.Contains(s.journal(t), "not our child") {
				t.Errorf("systemd supervises a generation as an alien process")
			}

			p50, wallMax := p50Max(walls)
			n, p99Around := aroundEvents(res)
			var winP99 []time.Duration
			for _, ev := range res.Events {
				winP99 = append(winP99, ev.Window.P99)
			}
			winP50, winMax := p50Max(winP99)
			t.Logf("%s: %d reloads under %d clients, %d requests (%.0f/s), %d failed %+v; systemctl reload wall p50 %v max %v; "+
				"p99 within ±1 s of a reload %v (%d requests; per-reload window p99 median %v max %v) vs steady p99 %v (%d requests), steady p50 %v; "+
				"generations %d, slow requests %d all on the old pid",
				mode, reloads, res.Clients, res.Requests, res.RPS, res.Failed(), res.Failures,
				p50.Round(time.Millisecond), wallMax.Round(time.Millisecond),
				p99Around.Round(time.Microsecond), n, winP50.Round(time.Microsecond), winMax.Round(time.Microsecond),
				res.Steady.P99.Round(time.Microsecond), res.Steady.Requests, res.Steady.P50.Round(time.Microsecond),
				len(res.PIDs), len(slows))
		})
	}
}

// failCase is one failed reload of TestReloadFailure.
type failCase struct {
	name string
	// setup breaks /usr/bin/webapp (or the unit) before the reload.
	setup func(ctx context.Context) error
	// journal and status are what the journal lines written during the
	// reload (the box's whole journal after the reload began) and
	// StatusText must contain ("" for status: not checked).
	journal []string
	status  string
	// maxTook bounds `systemctl reload`: a failure is reported promptly,
	// not when TimeoutStartSec=60s runs out. The bounds are generous
	// (a loaded machine), far below 60 s.
	maxTook time.Duration
}

// failOutcome is what a failCase saw.
type failOutcome struct {
	Reload    reloadOutcome
	Journal   string // lines written during the reload
	Props     map[string]string
	Fresh     freshAnswer // GET / after the reload
	Leftovers error       // processes beside MainPID
	Err       error
}

// TestReloadFailure: under load, a reload to a new binary that is missing,
// not executable, exits at once, crashes, or is not ready within
// --reload-timeout fails visibly (systemctl reload exits non-zero, the
// reason is in the journal and StatusText) while the old generation keeps
// serving every request, and leaves no process behind. A good binary then
// reloads normally.
//
// ExecReload= of the shipped unit runs /usr/bin/webapp itself, so a
// missing or non-executable binary fails as the reload command, before the
// running generation is asked; those two cases are run both ways: with the
// shipped unit, and with a drop-in whose ExecReload= runs a good build kept
// elsewhere, so that the swap itself meets the broken binary. The broken
// servers are shell scripts that exec the good build for `reload` only.
func TestReloadFailure(t *testing.T) { onEachSystemd(t, testReloadFailure) }

func testReloadFailure(t *testing.T, sd systemdtest.Systemd) {
	const reloadTimeout = 3 * time.Second
	s := startService(t, serviceOptions{Systemd: sd, ServiceDropIn: "Environment=WEBAPP_OPTS=--reload-timeout=" + reloadTimeout.String()})
	good := buildWebapp(t, "")
	s.box.CopyFile(t, good, goodClient, 0o755)
	fixed := buildWebapp(t, "2.0.0-e2e-fixed")
	first, _ := s.get(t, "/")
	oldPID := first.Header.Get("X-Webapp-Pid")

	script := func(body string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, stderr, err := s.box.Exec(ctx, "sh", "-c", `printf '%s\n' '#!/bin/sh' "$1" "$2" >/usr/bin/.webapp.new &&
chmod 755 /usr/bin/.webapp.new && mv -f /usr/bin/.webapp.new /usr/bin/webapp`,
				"sh", `case "$1" in reload) exec `+goodClient+` "$@";; esac`, body)
			if err != nil {
				return fmt.Errorf("%v: %s", err, stderr)
			}
			return nil
		}
	}
	box := func(args ...string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, stderr, err := s.box.Exec(ctx, args...)
			if err != nil {
				return fmt.Errorf("%v: %s", err, stderr)
			}
			return nil
		}
	}
	rmBinary := box("rm", "-f", "/usr/bin/webapp")
	notExec := box("sh", "-c", "cp "+goodClient+" /usr/bin/.webapp.new && chmod 644 /usr/bin/.webapp.new && mv -f /usr/bin/.webapp.new /usr/bin/webapp")
	quick := 15 * time.Second
	cases := []failCase{
		{name: "missing, shipped ExecReload=", setup: rmBinary, maxTook: quick,
			journal: []string{"/usr/bin/webapp: No such file or directory", "status=203/EXEC"}},
		{name: "not executable, shipped ExecReload=", setup: notExec, maxTook: quick,
			journal: []string{"/usr/bin/webapp: Permission denied", "status=203/EXEC"}},
		{name: "exits at once", setup: script("exit 3"), maxTook: quick,
			journal: []string{"reload failed: new generation (pid", "exited before it was ready"},
			status:  "reload failed: new generation (pid"},
		{name: "crashes", setup: script("kill -SEGV $$"), maxTook: quick,
			journal: []string{"reload failed: new generation (pid", "exited before it was ready"},
			status:  "reload failed: new generation (pid"},
		{name: "not ready in time", setup: script("exec sleep 60"), maxTook: reloadTimeout + 12*time.Second,
			journal: []string{"reload failed: new generation (pid", "not ready within " + reloadTimeout.String()},
			status:  "not ready within " + reloadTimeout.String()},
		{name: "missing, reload client elsewhere", maxTook: quick,
			setup: func(ctx context.Context) error {
				if err := s.swapBinary(good); err != nil { // so that daemon-reload does not matter
					return err
				}
				dropIn := "[Service]\nExecReload=\nExecReload=+" + goodClient + " reload\n"
				if err := box("sh", "-c", `printf '%s' "$1" >/etc/systemd/system/webapp.service.d/reload-client.conf`, "sh", dropIn)(ctx); err != nil {
					return err
				}
				if err := box("systemctl", "daemon-reload")(ctx); err != nil {
					return err
				}
				return rmBinary(ctx)
			},
			journal: []string{"reload failed: cannot start the new binary", "/usr/bin/webapp"},
			status:  "reload failed: cannot start the new binary"},
		{name: "not executable, reload client elsewhere", setup: notExec, maxTook: quick,
			journal: []string{"reload failed: cannot start the new binary", "/usr/bin/webapp"},
			status:  "reload failed: cannot start the new binary"},
	}

	outcomes := make([]failOutcome, len(cases))
	var recovered failOutcome
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := load.Run(ctx, s.url+"/", load.Options{
		Clients:  32,
		Mode:     load.KeepAlive,
		Duration: 2 * time.Minute,
		Tail:     2 * time.Second,
		Schedule: load.Schedule{
			Start: 2 * time.Second,
			Count: len(cases) + 1,
			Run: func(ctx context.Context, i int) error {
				if i == len(cases) { // install a good binary: the way out
					o := &recovered
					if o.Err = s.swapBinary(fixed); o.Err != nil {
						return o.Err
					}
					o.Reload = s.reload(ctx)
					if o.Props, o.Err = s.showCtx(ctx, "MainPID", "StatusText"); o.Err != nil {
						return o.Err
					}
					if o.Err = s.waitStoppedAccepting(ctx, 10*time.Second, oldPID); o.Err != nil {
						return o.Err
					}
					o.Fresh = getFresh(ctx, s.url+"/")
					return o.Reload.Err
				}
				c, o := cases[i], &outcomes[i]
				if o.Err = c.setup(ctx); o.Err != nil {
					return o.Err
				}
				cursor, err := s.journalCursor(ctx)
				if err != nil {
					o.Err = err
					return err
				}
				o.Reload = s.reload(ctx)
				// The lines may reach the journal after the command returned.
				if o.Journal, o.Err = s.waitLinesAfter(ctx, cursor, 10*time.Second, c.journal...); o.Err != nil {
					return o.Err
				}
				if o.Props, o.Err = s.showCtx(ctx, "MainPID", "StatusText", "ActiveState", "SubState", "NRestarts"); o.Err != nil {
					return o.Err
				}
				o.Fresh = getFresh(ctx, s.url+"/")
				_, o.Leftovers = s.waitOnlyMainCtx(ctx, 15*time.Second)
				return nil
			},
		},
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	var summary []string
	for i, c := range cases {
		o := outcomes[i]
		t.Run(c.name, func(t *testing.T) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			if o.Reload.Err == nil {
				t.Errorf("systemctl reload succeeded, want a failure:\n%s", o.Reload.Output)
			}
			if o.Reload.Took > c.maxTook {
				t.Errorf("systemctl reload took %v, want at most %v", o.Reload.Took, c.maxTook)
			}
			if m := missing(o.Journal, c.journal...); m != "" {
				t.Errorf("the journal of the reload lacks %q:\n%s", m, o.Journal)
			}
			if c.status != "" && !strings.Contains(o.Props["StatusText"], c.status) {
				t.Errorf("StatusText=%q, want it to contain %q", o.Props["StatusText"], c.status)
			}
			if o.Props["MainPID"] != oldPID || o.Props["ActiveState"] != "active" || o.Props["SubState"] != "running" || o.Props["NRestarts"] != "0" {
				t.Errorf("after the failed reload %v, want MainPID %s active/running, NRestarts=0", o.Props, oldPID)
			}
			if o.Fresh.Err != nil || o.Fresh.Status != 200 || o.Fresh.PID != oldPID {
				t.Errorf("GET / after the failed reload: %v, status %d, pid %s; want 200 from %s", o.Fresh.Err, o.Fresh.Status, o.Fresh.PID, oldPID)
			}
			if o.Leftovers != nil {
				t.Error(o.Leftovers)
			}
		})
		reason := o.Props["StatusText"]
		if c.status == "" {
			reason = lastLine(o.Journal, "203/EXEC")
		}
		summary = append(summary, fmt.Sprintf("%s: exit %v after %v (%s)", c.name, exitStatus(o.Reload.Err), o.Reload.Took.Round(time.Millisecond), reason))
	}
	if res.Failed() != 0 {
		t.Errorf("%s", describeFailures(res))
	}
	if recovered.Err != nil || recovered.Reload.Err != nil {
		t.Errorf("reload to a good binary after the failures: %v %v\n%s", recovered.Err, recovered.Reload.Err, recovered.Reload.Output)
	} else if recovered.Props["MainPID"] == oldPID || recovered.Fresh.PID != recovered.Props["MainPID"] || recovered.Fresh.Version != "2.0.0-e2e-fixed" {
		t.Errorf("reload to a good binary after the failures: MainPID %s (was %s), GET / from pid %s version %s",
			recovered.Props["MainPID"], oldPID, recovered.Fresh.PID, recovered.Fresh.Version)
	}
	if _, ok := s.waitOnlyMain(t, 15*time.Second); !ok {
		t.Errorf("after the recovery: %v", s.procs(t))
	}
	if n := len(res.PIDs); n > 2 {
		t.Errorf("the load was answered by %d generations, want the first and the recovered one: %v", n, res.PIDs)
	}
	t.Logf("failed reloads under 32 keep-alive clients: %d requests, %d failed %+v; %s; then a good binary: reload in %v",
		res.Requests, res.Failed(), res.Failures, strings.Join(summary, "; "), recovered.Reload.Took.Round(time.Millisecond))
}

// TestReloadConcurrent: 10 `systemctl reload` fired at once under load.
// systemd runs one reload job at a time: a request that arrives while no
// job runs starts one, one that arrives while a job waits merges into it,
// and one that arrives while a job runs makes that job run once more when
// it ends. Webapp makes control requests that reach a generation during
// its attempt share that attempt. How many swaps that makes depends on
// when each command reaches systemd; what holds is: every command
// succeeds, no attempt fails, there are between 1 and 10 swaps, each
// starting a generation of its own and the last one's being MainPID, only
// those generations answer, one webapp process is left once the old ones
// have drained, and no request fails.
func TestReloadConcurrent(t *testing.T) { onEachSystemd(t, testReloadConcurrent) }

func testReloadConcurrent(t *testing.T, sd systemdtest.Systemd) {
	const n = 10
	s := startService(t, serviceOptions{Systemd: sd})
	first, _ := s.get(t, "/")
	startPID := first.Header.Get("X-Webapp-Pid")
	cursor, err := s.journalCursor(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	outcomes := make([]reloadOutcome, n)
	var (
		parents  map[string]string // webapp serve pid: the generation that started it
		listings int
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := load.Run(ctx, s.url+"/", load.Options{
		Clients:  32,
		Mode:     load.KeepAlive,
		Duration: time.Minute,
		Tail:     3 * time.Second,
		Schedule: load.Schedule{
			Start: 2 * time.Second,
			Count: 1,
			Run: func(ctx context.Context, _ int) error {
				sampler, err := s.sampleGenerations(ctx)
				if err != nil {
					return err
				}
				var wg sync.WaitGroup
				for i := range outcomes {
					wg.Add(1)
					go func() {
						defer wg.Done()
						outcomes[i] = s.reload(ctx)
					}()
				}
				wg.Wait()
				parents, listings, err = sampler.stop()
				return err
			},
		},
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if res.Failed() != 0 {
		t.Errorf("%s", describeFailures(res))
	}
	var took []time.Duration
	for i, o := range outcomes {
		took = append(took, o.Took)
		if o.Err != nil {
			t.Errorf("reload %d of %d at once: %v\n%s", i, n, o.Err, o.Output)
		}
	}
	p := s.show(t, "MainPID", "NRestarts", "ActiveState", "SubState")
	if p["MainPID"] == startPID || p["NRestarts"] != "0" || p["ActiveState"] != "active" || p["SubState"] != "running" {
		t.Errorf("after %d reloads at once: %v, want a new MainPID (was %s), active/running, NRestarts=0", n, p, startPID)
	}
	ps, ok := s.waitOnlyMain(t, 15*time.Second)
	if !ok {
		t.Errorf("15 s after %d reloads at once the service's cgroup holds %v, want only MainPID %s", n, ps, p["MainPID"])
	}
	// The old generation logs the swap to MainPID as it hands over; wait
	// until that line has reached the journal.
	j, _, err := s.waitJournalAfter(ctx, cursor, 10*time.Second, []string{"-u", "webapp.service"}, func(j string) bool {
		return slices.Contains(tookOver(j), p["MainPID"])
	})
	if err != nil {
		t.Fatal(err)
	}
	gens := tookOver(j)
	shared := strings.Count(j, "already under way")
	switch {
	case len(gens) < 1 || len(gens) > n:
		t.Errorf("%d reloads at once made %d swaps, want 1 to %d:\n%s", n, len(gens), n, j)
	case !slices.Contains(gens, p["MainPID"]):
		t.Errorf("no swap to MainPID %s in the journal (swaps to %v):\n%s", p["MainPID"], gens, j)
	}
	seen := map[string]bool{startPID: true}
	for _, g := range gens {
		if seen[g] {
			t.Errorf("pid %s took over twice, or is the first generation %s (swaps to %v):\n%s", g, startPID, gens, j)
		}
		seen[g] = true
	}
	if strings.Contains(j, "reload failed") {
		t.Errorf("a swap attempt failed:\n%s", j)
	}
	// Never two new generations: no generation started two, every one
	// seen is the first or one that took over and was started by one of
	// those, and the last one (which stays) was seen.
	if len(res.Events) != 1 || res.Events[0].Err != nil {
		t.Fatalf("watching the service's cgroup: %v", res.Events)
	}
	started := map[string][]string{} // generation: the ones it started
	for child, parent := range parents {
		switch {
		case !seen[child]:
			t.Errorf("webapp serve process %s (started by %s) is neither the first generation nor one that took over %v", child, parent, gens)
		case child == startPID && parent != "-", child != startPID && !seen[parent]:
			t.Errorf("generation %s was started by %s, want the first generation %s or one that took over %v", child, parent, startPID, gens)
		case child != startPID:
			started[parent] = append(started[parent], child)
		}
	}
	for parent, children := range started {
		if len(children) > 1 {
			t.Errorf("generation %s started %d new generations %v, want at most one", parent, len(children), children)
		}
	}
	if _, ok := parents[p["MainPID"]]; !ok {
		t.Errorf("MainPID %s was never seen in the cgroup listings: %v", p["MainPID"], parents)
	}
	for pid := range res.PIDs {
		if !seen[pid] {
			t.Errorf("the load was answered by pid %s, neither the first generation %s nor one that took over %v", pid, startPID, gens)
		}
	}
	if res.PIDs[startPID] == 0 {
		t.Errorf("the first generation %s answered nothing: %v", startPID, res.PIDs)
	}
	if a := getFresh(ctx, s.url+"/"); a.Err != nil || a.Status != 200 || a.PID != p["MainPID"] {
		t.Errorf("GET / after the reloads: %v, status %d, pid %s; want 200 from MainPID %s", a.Err, a.Status, a.PID, p["MainPID"])
	}
	p50, maxTook := p50Max(took)
	t.Logf("%d systemctl reload at once under 32 keep-alive clients: all exited 0: %v; %d swaps (%d control requests shared an attempt), %d generations answered the load, systemctl p50 %v max %v; %d requests, %d failed; one process left: %v; "+
		"generations and who started them, over %d cgroup listings: %v",
		n, !t.Failed(), len(gens), shared, len(res.PIDs), p50.Round(time.Millisecond), maxTook.Round(time.Millisecond), res.Requests, res.Failed(), ps,
		listings, parents)
}

// genSampler lists webapp.service's cgroup every few ms, in one shell
// loop in the box, and records each `webapp serve` process with the
// generation that started it: the pid in the marker an upgrade puts in a
// new generation's environment (BATON_UPGRADE_PARENT; the first
// generation has none). A generation that served no connection may exit
// right after it handed over, so it may be missed.
type genSampler struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	mu     sync.Mutex
	out    strings.Builder
	ends   int           // complete listings
	listed chan struct{} // closed and replaced at the end of each listing
}

func (g *genSampler) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.out.Write(b)
	if n := strings.Count(g.out.String(), "\nE\n"); n > g.ends {
		g.ends = n
		close(g.listed)
		g.listed = make(chan struct{})
	}
	return len(b), nil
}

// waitListing waits for the end of a listing begun after the call.
func (g *genSampler) waitListing(within time.Duration) error {
	g.mu.Lock()
	want := g.ends + 2
	g.mu.Unlock()
	deadline := time.After(within)
	for {
		g.mu.Lock()
		n, ch := g.ends, g.listed
		g.mu.Unlock()
		if n >= want {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return fmt.Errorf("no cgroup listing within %v", within)
		}
	}
}

// sampleGenerations starts a genSampler and returns after its first
// listing.
func (s *service) sampleGenerations(ctx context.Context) (*genSampler, error) {
	p, err := s.showCtx(ctx, "ControlGroup")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	g := &genSampler{cancel: cancel, listed: make(chan struct{})}
	g.out.WriteString("\n")
	// Builtins only, but for the sleep: a listing takes a few ms.
	g.cmd = s.box.Command(ctx, "bash", "-c", `f=/sys/fs/cgroup"$1"/cgroup.procs
while :; do
	while read -r p; do
		a0= a1=
		{ IFS= read -r -d '' a0; IFS= read -r -d '' a1; } 2>/dev/null </proc/$p/cmdline
		[ "$a0 $a1" = "/usr/bin/webapp serve" ] || continue
		# A generation's child forked to run the trampoline shell has its
		# parent's command line and environment until it execs: not a
		# generation.
		read -r _ _ _ pp _ 2>/dev/null </proc/$p/stat
		b0= b1=
		{ IFS= read -r -d '' b0; IFS= read -r -d '' b1; } 2>/dev/null </proc/$pp/cmdline
		[ "$b0 $b1" = "/usr/bin/webapp serve" ] && continue
		parent=- vars=0
		while IFS= read -r -d '' kv; do
			vars=$((vars+1))
			case $kv in BATON_UPGRADE_PARENT=*) parent=${kv#*=};; esac
		done 2>/dev/null </proc/$p/environ
		# A process exiting between the two reads has no environment
		# left to read: it says nothing of its parent.
		[ "$vars" -gt 0 ] || continue
		# One that exited during the read may have given only the first
		# part of it (BATON_UPGRADE_PARENT comes last): its command line
		# is still there afterwards only if its memory was throughout.
		c0= c1=
		{ IFS= read -r -d '' c0; IFS= read -r -d '' c1; } 2>/dev/null </proc/$p/cmdline
		[ "$c0 $c1" = "/usr/bin/webapp serve" ] || continue
		echo "P $p $parent"
	done 2>/dev/null <"$f"
	echo E
	sleep 0.01
done`, "bash", p["ControlGroup"])
	g.cmd.Stdout = g
	if err := g.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	if err := g.waitListing(10 * time.Second); err != nil {
		cancel()
		g.cmd.Wait()
		return nil, err
	}
	return g, nil
}

// stop ends the sampling after one more listing and returns every webapp
// serve process seen with the pid of the generation that started it ("-"
// for none).
func (g *genSampler) stop() (parents map[string]string, listings int, err error) {
	err = g.waitListing(10 * time.Second)
	g.cancel()
	g.cmd.Wait()
	g.mu.Lock()
	out := g.out.String()
	g.mu.Unlock()
	parents = map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if line == "E" {
			listings++
		}
		if f := strings.Fields(line); len(f) == 3 && f[0] == "P" {
			if prev, ok := parents[f[1]]; ok && prev != f[2] {
				err = errors.Join(err, fmt.Errorf("process %s listed as started by %s, then by %s", f[1], prev, f[2]))
			}
			parents[f[1]] = f[2]
		}
	}
	return parents, listings, err
}

// tookOverRE matches the line an old generation logs when a new one has
// taken over.
var tookOverRE = regexp.MustCompile(`upgrade: pid (\d+) took over in `)

// tookOver lists the pids that took over in journal, in its order.
func tookOver(journal string) []string {
	var pids []string
	for _, m := range tookOverRE.FindAllStringSubmatch(journal, -1) {
		pids = append(pids, m[1])
	}
	return pids
}

// TestReloadStop: `systemctl stop` during a reload. Both generations
// drain their requests and the unit stops well before TimeoutStopSec=
// with Result=success, SIGKILLing nothing.
func TestReloadStop(t *testing.T) {
	const slowMS = 3000
	t.Run("new generation starting", func(t *testing.T) {
		// The new /usr/bin/webapp takes 3 s before it execs the real
		// server, so the stop arrives while the reload waits for it.
		s := startService(t, serviceOptions{})
		s.box.CopyFile(t, buildWebapp(t, ""), goodClient, 0o755)
		s.get(t, "/") // started from the real /usr/bin/webapp: a reload starts that path
		s.installScript(t, `[ "$1" = serve ] && sleep 3
exec `+goodClient+` "$@"`)
		oldPID := s.mainPID(t)
		slow := s.slowOn(t, oldPID, 2, slowMS)
		rel := make(chan reloadOutcome, 1)
		go func() { rel <- s.reload(context.Background()) }()
		waitFor(t, 10*time.Second, "the new generation to be starting", func() (bool, string) {
			ps := liveOnly(s.procs(t))
			return slices.ContainsFunc(ps, func(p cgProc) bool { return strings.HasPrefix(p.Cmd, "sleep 3") }), fmt.Sprint(ps)
		})
		if p := s.show(t, "ActiveState", "SubState"); p["SubState"] != "reload" {
			t.Fatalf("not reloading when stop is sent: %v", p)
		}
		stopTook := s.stopAndCheck(t)
		r := <-rel
		for i := range 2 {
			a := <-slow
			if err := slowOK(a, slowMS); err != nil || a.PID != oldPID {
				t.Errorf("/slow?ms=%d %d in flight at the stop: %v, answered by pid %s, want the old generation %s", slowMS, i, err, a.PID, oldPID)
			}
		}
		t.Logf("stop during a reload whose new generation is still starting: stop took %v; the reload: exit %s (%s)",
			stopTook.Round(time.Millisecond), exitStatus(r.Err), firstLine(r.Output))
	})
	t.Run("old generation draining", func(t *testing.T) {
		// The stop arrives right after the swap: the old generation still
		// drains a slow request, the new one serves another. The old one's
		// is long enough to outlast the reload on a loaded machine.
		const oldMS = 8000
		s := startService(t, serviceOptions{})
		s.get(t, "/")
		oldPID := s.mainPID(t)
		slowOld := s.slowOn(t, oldPID, 1, oldMS)
		r := s.reload(context.Background())
		if r.Err != nil {
			t.Fatalf("reload: %v\n%s", r.Err, r.Output)
		}
		newPID := s.mainPID(t)
		if err := s.waitStoppedAccepting(context.Background(), 10*time.Second, oldPID); err != nil {
			t.Fatal(err)
		}
		slowNew := s.slowOn(t, newPID, 1, slowMS)
		if ps := liveOnly(s.procs(t)); len(ps) != 2 {
			t.Fatalf("want the old and the new generation running at the stop, got %v", ps)
		}
		stopTook := s.stopAndCheck(t)
		for _, c := range []struct {
			ch  <-chan freshAnswer
			ms  int
			pid string
		}{{slowOld, oldMS, oldPID}, {slowNew, slowMS, newPID}} {
			a := <-c.ch
			if err := slowOK(a, c.ms); err != nil || a.PID != c.pid {
				t.Errorf("/slow?ms=%d in flight at the stop: %v, answered by pid %s, want %s", c.ms, err, a.PID, c.pid)
			}
		}
		t.Logf("stop right after a reload, old generation %s draining a %d ms request and new %s a %d ms one: stop took %v",
			oldPID, oldMS, newPID, slowMS, stopTook.Round(time.Millisecond))
	})
}

// slowAsync starts n GET /slow?ms=ms on new connections.
//
//lint:ignore U1000 one of the slow-request helpers with slowDialed and slowOn, for tests that need neither the ports nor the accept
func (s *service) slowAsync(n, ms int) <-chan freshAnswer {
	ch, _ := s.slowDialed(n, ms)
	return ch
}

// slowDialed is slowAsync that returns once the connections are made,
// with their local ports.
func (s *service) slowDialed(n, ms int) (<-chan freshAnswer, []int) {
	ch := make(chan freshAnswer, n)
	dialed := make(chan int, n)
	for range n {
		go func() {
			ch <- getFreshFrom(context.Background(), fmt.Sprintf("%s/slow?ms=%d", s.url, ms), func(p int) { dialed <- p })
		}()
	}
	ports := make([]int, n)
	for i := range ports {
		ports[i] = <-dialed
	}
	return ch, ports
}

// slowOn is slowAsync that waits until generation pid has accepted the
// connections.
func (s *service) slowOn(t *testing.T, pid string, n, ms int) <-chan freshAnswer {
	t.Helper()
	ch, ports := s.slowDialed(n, ms)
	if err := s.waitAccepted(context.Background(), 10*time.Second, pid, ports...); err != nil {
		t.Fatal(err)
	}
	return ch
}

// stopAndCheck stops webapp.service and checks that the stop was an
// orderly drain within TimeoutStopSec=; it returns how long it took.
func (s *service) stopAndCheck(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	s.box.Systemctl(t, "stop", "webapp.service")
	took := time.Since(start)
	p := s.show(t, "ActiveState", "Result", "TimeoutStopUSec")
	j := s.journalWith(t, "no connection cut")
	// The reload command cancelled by the stop exits 0 ("abandoned"), so
	// the stop is not counted as failed.
	if p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("after stop: %v, want inactive with Result=success\n%s", p, j)
	}
	if n := strings.Count(j, "no connection cut"); n == 0 || strings.Contains(j, "connections cut at the") {
		t.Errorf("stop during a reload was not an orderly drain:\n%s", j)
	}
	if took > 25*time.Second {
		t.Errorf("stop took %v, want well under TimeoutStopSec=%s", took, p["TimeoutStopUSec"])
	}
	if strings.Contains(j, "SIGKILL") || strings.Contains(j, "Killing process") {
		t.Errorf("stop during a reload killed a process:\n%s", j)
	}
	if ps := liveOnly(s.procs(t)); len(ps) != 0 {
		t.Errorf("after stop the service's cgroup holds %v", ps)
	}
	return took
}

// TestReloadRepeated: 200 reloads one after another. The main process's
// open fd count and RSS do not grow from generation to generation, old
// generations all exit, and no zombie is left.
func TestReloadRepeated(t *testing.T) {
	const n = 200
	s := startService(t, serviceOptions{})
	s.get(t, "/")
	type sample struct {
		gen      int
		fds, rss int
		sysFDs   int
	}
	var samples []sample
	take := func(gen int) {
		pid := s.mainPID(t)
		fds, rss := s.procStatus(t, pid)
		sysFDs, _ := s.procStatus(t, "1")
		samples = append(samples, sample{gen, fds, rss, sysFDs})
	}
	var took []time.Duration
	failed := 0
	pid := s.mainPID(t)
	for i := 1; i <= n; i++ {
		r := s.reload(context.Background())
		if r.Err != nil {
			failed++
			if failed <= 3 {
				t.Errorf("reload %d: %v\n%s\n%s", i, r.Err, r.Output, s.journal(t, "-n", "12"))
			}
		}
		took = append(took, r.Took)
		next := s.mainPID(t)
		if next == pid {
			t.Fatalf("reload %d: MainPID stayed %s", i, pid)
		}
		pid = next
		if i%25 == 0 || i == 5 {
			s.get(t, "/") // it serves
			take(i)
		}
	}
	ps, ok := s.waitOnlyMain(t, 15*time.Second)
	if !ok {
		t.Errorf("after %d reloads the service's cgroup holds %v", n, ps)
	}
	var z []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if z = s.zombies(t); len(z) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(z) != 0 {
		t.Errorf("zombies 15 s after %d reloads: %v", n, z)
	}
	early, late := samples[0], samples[len(samples)-1]
	if late.fds > early.fds+2 {
		t.Errorf("open fds of the main process: %d at generation %d, %d at generation %d (%v)", early.fds, early.gen, late.fds, late.gen, samples)
	}
	if late.rss > early.rss*5/4+4096 {
		t.Errorf("VmRSS of the main process: %d kB at generation %d, %d kB at generation %d (%v)", early.rss, early.gen, late.rss, late.gen, samples)
	}
	p := s.show(t, "NRestarts", "ActiveState")
	if p["NRestarts"] != "0" || p["ActiveState"] != "active" {
		t.Errorf("after %d reloads: %v", n, p)
	}
	p50, maxTook := p50Max(took)
	if failed > 0 {
		t.Errorf("systemctl reload failed %d times in %d", failed, n)
	}
	t.Logf("%d reloads in a row (%d failed): systemctl reload p50 %v max %v; main process fds %d -> %d, VmRSS %d -> %d kB (generation %d -> %d); systemd's fds %d -> %d; zombies left %d; samples (gen fds rss pid1-fds) %v",
		n, failed, p50.Round(time.Millisecond), maxTook.Round(time.Millisecond), early.fds, late.fds, early.rss, late.rss, early.gen, late.gen, early.sysFDs, late.sysFDs, len(z), samples)
}

// TestReloadWatchdog: with WatchdogSec=2, 10 reloads spaced over 10 s under
// load: every generation takes up the watchdog, and systemd never kills
// webapp for a missed ping.
func TestReloadWatchdog(t *testing.T) {
	const n = 10
	s := startService(t, serviceOptions{ServiceDropIn: "WatchdogSec=2"})
	first, _ := s.get(t, "/")
	startPID := first.Header.Get("X-Webapp-Pid")
	outcomes := make([]reloadOutcome, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := load.Run(ctx, s.url+"/", load.Options{
		Clients:  8,
		Mode:     load.KeepAlive,
		Duration: time.Minute,
		Tail:     5 * time.Second, // more than WatchdogSec= after the last swap
		Schedule: load.Schedule{
			Start: time.Second,
			Every: time.Second,
			Count: n,
			Run: func(ctx context.Context, i int) error {
				outcomes[i] = s.reload(ctx)
				return outcomes[i].Err
			},
		},
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	for i, o := range outcomes {
		if o.Err != nil {
			t.Errorf("reload %d: %v\n%s", i, o.Err, o.Output)
		}
	}
	if res.Failed() != 0 {
		t.Errorf("%s", describeFailures(res))
	}
	p := s.show(t, "MainPID", "NRestarts", "ActiveState", "Result", "WatchdogUSec")
	if p["MainPID"] == startPID || p["NRestarts"] != "0" || p["ActiveState"] != "active" || p["Result"] != "success" || p["WatchdogUSec"] != "2s" {
		t.Errorf("after %d reloads with WatchdogSec=2: %v, want a new MainPID, active, Result=success, NRestarts=0", n, p)
	}
	// Each generation logs once that it took up the watchdog; the last
	// one's line may reach the journal late.
	var j string
	waitFor(t, 10*time.Second, "every generation's watchdog line", func() (bool, string) {
		j = s.journal(t)
		return strings.Count(j, "watchdog: pinging every") >= n+1, j
	})
	if strings.Contains(j, "Watchdog timeout") || strings.Contains(j, "watchdog") && strings.Contains(j, "SIGABRT") {
		t.Errorf("the watchdog fired:\n%s", j)
	}
	pinging := strings.Count(j, "watchdog: pinging every")
	if pinging != n+1 {
		t.Errorf("%d generations took up the watchdog, want %d:\n%s", pinging, n+1, j)
	}
	t.Logf("WatchdogSec=2, %d reloads a second apart under 8 clients: %d requests, %d failed; %d generations pinged the watchdog; %v",
		n, res.Requests, res.Failed(), pinging, p)
}
