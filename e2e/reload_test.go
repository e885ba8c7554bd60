package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// reloadEvent is what one reload of TestReloadUnderLoad saw.
type reloadEvent struct {
	Version       string // installed before the reload
	Before, After string // MainPID
	Reload        reloadOutcome
	Fresh         answer // GET / on a new connection after the reload
	Err           error  // reading MainPID, installing
}

// TestReloadUnderLoad: 50 `systemctl reload webapp` under 32 clients, in
// keep-alive and new-connection mode, each reload installing a build that
// reports another version first. No request fails; two 2 s requests in
// flight at each reload complete on the old generation; MainPID changes
// every time and the new version answers; systemd never restarts webapp.
func TestReloadUnderLoad(t *testing.T) {
	const (
		reloads = 50
		slowMS  = 2000
	)
	versions := []string{"2.0.0-e2e-a", "2.0.0-e2e-b"}
	for _, v := range versions {
		buildWebapp(t, v)
	}
	for _, mode := range []load.Mode{load.KeepAlive, load.NewConnection} {
		t.Run(mode.String(), func(t *testing.T) {
			s := startService(t, serviceOptions{})
			for _, v := range versions {
				s.box.CopyFile(t, buildWebapp(t, v), "/usr/local/lib/webapp-e2e/webapp-"+v, 0o755)
			}
			first, _ := s.get(t, "/")
			startPID := first.Header.Get("X-Webapp-Pid")

			events := make([]reloadEvent, reloads)
			type slowReq struct {
				event int
				a     answer
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
						p, err := s.showCtx(ctx, "MainPID")
						if err != nil {
							ev.Err = err
							return err
						}
						ev.Before = p["MainPID"]
						ev.Version = versions[i%len(versions)]
						if _, stderr, err := s.box.Exec(ctx, "sh", "-c",
							`cp "$1" /usr/bin/.webapp.new && mv -f /usr/bin/.webapp.new /usr/bin/webapp`,
							"sh", "/usr/local/lib/webapp-e2e/webapp-"+ev.Version); err != nil {
							ev.Err = fmt.Errorf("%v: %s", err, stderr)
							return ev.Err
						}
						for range 2 {
							slowWG.Add(1)
							go func() {
								defer slowWG.Done()
								a := fetch(context.Background(), fmt.Sprintf("%s/slow?ms=%d", s.url, slowMS))
								slowMu.Lock()
								slows = append(slows, slowReq{i, a})
								slowMu.Unlock()
							}()
						}
						time.Sleep(300 * time.Millisecond) // the old generation takes them
						ev.Reload = s.reload(ctx)
						if p, err = s.showCtx(ctx, "MainPID"); err != nil {
							ev.Err = err
							return err
						}
						ev.After = p["MainPID"]
						ev.Fresh = fetch(ctx, s.url+"/")
						return ev.Reload.Err
					},
				},
			})
			slowWG.Wait()
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if res.Failed() != 0 {
				t.Errorf("%s", failures(res))
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
				if i > 0 && events[i-1].After != "" && ev.Before != events[i-1].After {
					t.Errorf("reload %d: MainPID %s before it, but reload %d left %s", i, ev.Before, i-1, events[i-1].After)
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
			if ps, ok := s.waitOnlyMain(t, 10*time.Second); !ok {
				t.Errorf("old generations still running 10 s after the last reload (MainPID %s):\n%v", p["MainPID"], ps)
			}
			if n := len(res.PIDs); n != reloads+1 {
				t.Errorf("%d generations answered the load, want %d (%v)", n, reloads+1, res.PIDs)
			}
			if res.PIDs[startPID] == 0 {
				t.Errorf("the first generation %s answered nothing: %v", startPID, res.PIDs)
			}
			if strings.Contains(s.journal(t), "not our child") {
				t.Errorf("systemd supervises a generation as an alien process")
			}

			p50, wallMax := durations(walls)
			n, p99Around := aroundEvents(res)
			var winP99 []time.Duration
			for _, ev := range res.Events {
				winP99 = append(winP99, ev.Window.P99)
			}
			winP50, winMax := durations(winP99)
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
