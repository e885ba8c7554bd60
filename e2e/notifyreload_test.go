package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// useNotifyReload installs the shipped Type=notify-reload drop-in (and
// extra [Service] settings) for webapp.service, and starts the service.
func (s *service) useNotifyReload(t *testing.T, extra string) {
	t.Helper()
	s.box.WriteFile(t, "/etc/systemd/system/webapp.service.d/notify-reload.conf", unit(t, "webapp-notify-reload.conf"), 0o644)
	if extra != "" {
		s.box.WriteFile(t, "/etc/systemd/system/webapp.service.d/zz-test.conf", []byte("[Service]\n"+extra+"\n"), 0o644)
	}
	s.box.Systemctl(t, "daemon-reload")
	s.get(t, "/")
	if p := s.show(t, "Type", "ExecReload"); p["Type"] != "notify-reload" || p["ExecReload"] != "" {
		t.Fatalf("webapp.service with the drop-in: %v, want Type=notify-reload and no ExecReload=", p)
	}
}

// notifyReloadSystemd returns the systemd of Versions that knows
// Type=notify-reload (253 and later): Debian 13's.
func notifyReloadSystemd(t *testing.T) systemdtest.Systemd {
	t.Helper()
	for _, sd := range systemdtest.Versions(t) {
		if sd.Name != "systemd252" {
			sd.Require(t)
			return sd
		}
	}
	t.Fatal("no systemd 253 or later among the versions")
	return systemdtest.Systemd{}
}

// reloadsUnderLoad runs n reloads (a new binary installed before each,
// alternating two versions) under 32 keep-alive clients and returns the
// load's result and each reload's wall time. Every reload must succeed and
// change MainPID to a generation of the version just installed.
func reloadsUnderLoad(t *testing.T, s *service, n int) (*load.Result, []time.Duration) {
	t.Helper()
	versions := []string{"2.0.0-e2e-a", "2.0.0-e2e-b"}
	bins := map[string]string{}
	for _, v := range versions {
		bins[v] = buildWebapp(t, v)
	}
	walls := make([]time.Duration, n)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := load.Run(ctx, s.url+"/", load.Options{
		Clients:  32,
		Mode:     load.KeepAlive,
		Duration: 2 * time.Minute, // a bound: Tail ends the load
		Timeout:  5 * time.Second,
		Tail:     2 * time.Second,
		Schedule: load.Schedule{
			Start: 2 * time.Second,
			Every: time.Second,
			Count: n,
			Run: func(ctx context.Context, i int) error {
				before, err := s.showCtx(ctx, "MainPID")
				if err != nil {
					return err
				}
				v := versions[i%len(versions)]
				if err := s.swapBinary(bins[v]); err != nil {
					return err
				}
				r := s.reload(ctx)
				walls[i] = r.Took
				if r.Err != nil {
					return fmt.Errorf("systemctl reload: %w: %s", r.Err, r.Output)
				}
				after, err := s.showCtx(ctx, "MainPID")
				if err != nil {
					return err
				}
				if after["MainPID"] == before["MainPID"] {
					return fmt.Errorf("MainPID stayed %s", before["MainPID"])
				}
				if a := getFresh(ctx, s.url+"/"); a.Err != nil || a.Version != v || a.PID != after["MainPID"] {
					return fmt.Errorf("GET / after the reload: %v, pid %s version %s, want MainPID %s version %s", a.Err, a.PID, a.Version, after["MainPID"], v)
				}
				return nil
			},
		},
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(res.Events) != n {
		t.Fatalf("%d reloads ran, want %d", len(res.Events), n)
	}
	for _, e := range res.Events {
		if e.Err != nil {
			t.Errorf("reload %d: %v", e.Index, e.Err)
		}
	}
	if res.Failed() != 0 || res.Aborted != 0 {
		t.Errorf("%d reloads under load: %d failed, %d aborted, want 0\n%s", n, res.Failed(), res.Aborted, describeFailures(res))
	}
	if p := s.show(t, "NRestarts", "ActiveState", "SubState"); p["NRestarts"] != "0" || p["ActiveState"] != "active" || p["SubState"] != "running" {
		t.Errorf("after %d reloads: %v, want active/running with NRestarts=0", n, p)
	}
	return res, walls
}

// TestNotifyReload: under systemd 257, with the Type=notify-reload
// drop-in, `systemctl reload` sends SIGHUP and ends when the new
// generation is announced; 20 reloads under 32-client load fail no
// request. The shipped ExecReload= client runs the same 20 reloads on the
// same systemd for comparison of the reload's wall time (logged, not
// asserted). A swap that fails fails `systemctl reload`, with the reason
// in StatusText, while the old generation keeps serving.
func TestNotifyReload(t *testing.T) {
	sd := notifyReloadSystemd(t)
	const reloads = 20
	walls := map[string][]time.Duration{}
	for _, variant := range []string{"notify-reload", "ExecReload"} {
		t.Run(sd.Name+"/"+variant, func(t *testing.T) {
			s := startService(t, serviceOptions{Systemd: sd})
			if variant == "notify-reload" {
				s.useNotifyReload(t, "")
			} else {
				s.get(t, "/")
			}
			res, w := reloadsUnderLoad(t, s, reloads)
			walls[variant] = w
			p50, wmax := p50Max(w)
			t.Logf("%s, %s: %d reloads under %d keep-alive clients, %d requests, %d failed; systemctl reload wall p50 %v max %v",
				sd.Name, variant, reloads, res.Clients, res.Requests, res.Failed(), p50.Round(time.Millisecond), wmax.Round(time.Millisecond))
			if variant == "notify-reload" {
				// Every swap began with systemd's SIGHUP.
				if j := s.journal(t); strings.Count(j, "swapping in") != reloads {
					t.Errorf("%d swaps started by SIGHUP, want %d; journal:\n%s", strings.Count(j, "swapping in"), reloads, j)
				}
			}
		})
	}
	if len(walls) == 2 {
		np50, nmax := p50Max(walls["notify-reload"])
		ep50, emax := p50Max(walls["ExecReload"])
		t.Logf("%s, systemctl reload wall time over %d reloads under load: Type=notify-reload p50 %v max %v; ExecReload=webapp reload p50 %v max %v",
			sd.Name, reloads, np50.Round(time.Millisecond), nmax.Round(time.Millisecond), ep50.Round(time.Millisecond), emax.Round(time.Millisecond))
	}

	t.Run(sd.Name+"/failed-swap", func(t *testing.T) {
		const timeoutStart = 10 * time.Second
		s := startService(t, serviceOptions{Systemd: sd})
		s.useNotifyReload(t, fmt.Sprintf("TimeoutStartSec=%v\nEnvironment=WEBAPP_OPTS=--reload-timeout=3s", timeoutStart))
		before := s.mainPID(t)
		// A new binary that exits at once.
		s.box.WriteFile(t, "/usr/bin/webapp", []byte("#!/bin/sh\necho broken webapp >&2\nexit 3\n"), 0o755)
		r := s.reload(context.Background())
		p := s.show(t, "MainPID", "ActiveState", "SubState", "StatusText", "ReloadResult")
		if r.Err == nil {
			t.Errorf("systemctl reload to a binary that exits = success (%s), want a failure", r.Output)
		}
		if !strings.HasPrefix(p["StatusText"], "reload failed: ") || !strings.Contains(p["StatusText"], "exited") {
			t.Errorf("StatusText after the failed reload = %q, want reload failed: <why>", p["StatusText"])
		}
		if p["MainPID"] != before || p["ActiveState"] != "active" || p["SubState"] != "running" {
			t.Errorf("after the failed reload: %v, want MainPID %s active/running", p, before)
		}
		if resp, _ := s.get(t, "/"); resp.Header.Get(load.PIDHeader) != before {
			t.Errorf("after the failed reload GET / answered by pid %s, want the old generation %s", resp.Header.Get(load.PIDHeader), before)
		}
		t.Logf("%s: failed swap: systemctl reload took %v (TimeoutStartSec=%v), %v; %s", sd.Name, r.Took.Round(time.Millisecond), timeoutStart, p, r.Output)
		// A good binary then reloads.
		s.install(t, "2.0.0-e2e-a")
		if r := s.reload(context.Background()); r.Err != nil {
			t.Errorf("reload to a good binary after the failure: %v: %s", r.Err, r.Output)
		}
		if got := s.mainPID(t); got == before {
			t.Errorf("MainPID stayed %s after the good reload", got)
		}
	})
}
