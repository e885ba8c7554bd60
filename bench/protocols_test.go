package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd/systemdtest"
)

// runProtocols is scenario 6: webapp with its four sockets under a real
// systemd, each protocol loaded by its own client through reloads and
// then restarts, then all four at once.
func runProtocols(t *testing.T, e *benchEnv) *Protocols {
	cfg := e.cfg
	h2load := requireTool(t, "h2load", "Debian package nghttp2-client")
	ghz := ensureGhz(t)
	box := systemdtest.Boot(t, systemdtest.Options{Name: "bench-proto"})
	t0 := time.Now()
	w := installWebapp(t, e, box)
	t.Logf("webapp installed and serving its four sockets in %v", time.Since(t0).Round(time.Millisecond))
	p := &Protocols{ReloadEvery: cfg.protoReloadEvery, RestartEvery: cfg.protoRestartEvery, Lead: cfg.protoLead, Tail: cfg.protoTail}
	p.Notes = append(p.Notes, fmt.Sprintf("webapp.service and the four socket units are `systemd/units`' files, each socket moved to a free port by a drop-in; webapp.service's drop-in: `%s`.", strings.ReplaceAll(strings.TrimSpace(w.dropIn), "\n", "` `")))

	// A run's expected length (the last event given half a second): ghz
	// runs that long at once, so that one of its runs covers every event.
	runLength := func(n int, every time.Duration) time.Duration {
		return cfg.protoLead + time.Duration(max(n-1, 0))*every + 500*time.Millisecond + cfg.protoTail
	}
	clients := func(n int, every time.Duration) map[string]protoClient {
		return map[string]protoClient{
			"h2c": h2loadClient{bin: h2load, url: "http://" + w.addr["http"] + "/", protocol: "h2c", clients: 8, requests: cfg.h2loadRequests},
			"h2":  h2loadClient{bin: h2load, url: "https://" + w.addr["https"] + "/", protocol: "h2", clients: 8, requests: cfg.h2loadRequests},
			"grpc": ghzClient{bin: ghz, addr: w.addr["grpc"], concurrency: 8, connections: 2,
				chunk: runLength(n, every)},
			"udp": udpClient{addr: w.addr["udp"], senders: 4, wait: 10 * time.Second},
		}
	}
	scenarios := []struct {
		key, title string
		clients    []string
	}{
		{"h2c", "h2c on the http socket (h2load)", []string{"h2c"}},
		{"h2", "HTTP/2 over TLS on the https socket (h2load)", []string{"h2"}},
		{"grpc", "gRPC unary on the grpc socket (ghz)", []string{"grpc"}},
		{"udp", "UDP on the udp socket", []string{"udp"}},
		{"all", "all four at once", []string{"h2c", "h2", "grpc", "udp"}},
	}
	before := box.Show(t, "webapp.service", "MainPID", "NRestarts")
	for _, sc := range scenarios {
		s := &ProtoScenario{Key: sc.key, Title: sc.title}
		for _, ev := range []struct {
			noun, action string
			n            int
			every        time.Duration
			args         []string
		}{
			{"reload", "`systemctl reload webapp`", cfg.protoReloads, cfg.protoReloadEvery, []string{"reload", "webapp"}},
			{"restart", "`systemctl restart webapp.service`", cfg.protoRestarts, cfg.protoRestartEvery, []string{"restart", "webapp.service"}},
		} {
			all := clients(ev.n, ev.every)
			var cs []protoClient
			for _, k := range sc.clients {
				cs = append(cs, all[k])
			}
			run := protoRun(t, e, w, cs, ev.noun, ev.action, ev.n, ev.every, func(ctx context.Context) error { return w.systemctl(ctx, ev.args...) })
			bad, evBad := run.Bad()
			t.Logf("%s through %d %ss (%v): %s; %d not answered, %d %ss failed; server CPU %v",
				sc.key, len(run.Events), ev.noun, run.Elapsed.Round(time.Millisecond), loadsLine(run.Loads), bad, evBad, ev.noun, run.CPU)
			if bad > 0 || evBad > 0 {
				logJournalAroundBad(t, box, run)
			}
			s.Runs = append(s.Runs, run)
		}
		p.Scenarios = append(p.Scenarios, s)
	}
	after := box.Show(t, "webapp.service", "MainPID", "NRestarts", "ActiveState", "SubState", "Result")
	p.Notes = append(p.Notes, fmt.Sprintf("`systemctl show webapp.service` before: MainPID=%s NRestarts=%s; after: MainPID=%s NRestarts=%s ActiveState=%s SubState=%s Result=%s.",
		before["MainPID"], before["NRestarts"], after["MainPID"], after["NRestarts"], after["ActiveState"], after["SubState"], after["Result"]))
	p.Notes = append(p.Notes, journalNote(t, e, box, "protocol"))
	return p
}

// protoRun loads webapp with clients while event runs n times: from
// cfg.protoLead into the run, one per period every (or as soon as the
// previous one returned, if later), then cfg.protoTail of load.
func protoRun(t *testing.T, e *benchEnv, w *boxWebapp, clients []protoClient, noun, action string, n int, every time.Duration, event func(context.Context) error) *ProtoRun {
	cfg := e.cfg
	ctx := t.Context()
	run := &ProtoRun{Noun: noun, Action: action}
	pids := map[int]bool{w.mainPID(t): true}
	cpu0 := w.sliceCPU(t)
	stop := make(chan struct{})
	loads := make([]ProtoLoad, len(clients))
	spans := make([][]span, len(clients))
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, c := range clients {
		wg.Go(func() { loads[i], spans[i] = c.load(ctx, stop) })
	}
	for i := range n {
		at := t0.Add(cfg.protoLead + time.Duration(i)*every)
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
		}
		s := time.Now()
		err := event(ctx)
		ev := ProtoEvent{Start: s.Sub(t0), Duration: time.Since(s)}
		if err != nil {
			ev.Error = err.Error()
			t.Logf("%s %d: %v", noun, i+1, err)
		}
		run.Events = append(run.Events, ev)
		pids[w.mainPID(t)] = true
	}
	select {
	case <-time.After(cfg.protoTail):
	case <-ctx.Done():
	}
	close(stop)
	wg.Wait()
	run.Started, run.Elapsed = t0, time.Since(t0)
	run.CPU = w.sliceCPU(t) - cpu0
	run.MainPIDs = len(pids)
	for i := range loads {
		loads[i].Overlapping = overlapping(spans[i], t0, run.Events)
	}
	run.Loads = loads
	return run
}

// overlapping counts the spans that overlap an event.
func overlapping(spans []span, t0 time.Time, evs []ProtoEvent) int {
	n := 0
	for _, s := range spans {
		for _, e := range evs {
			start := t0.Add(e.Start)
			if s.start.Before(start.Add(e.Duration)) && start.Before(s.end) {
				n++
				break
			}
		}
	}
	return n
}

func loadsLine(ls []ProtoLoad) string {
	var parts []string
	for _, l := range ls {
		s := fmt.Sprintf("%s %d %s (%d OK, %.0f/s, %d runs, %d overlapping)", l.Protocol, l.Requests, l.Unit, l.OK, l.RPS(), l.Runs, l.Overlapping)
		if len(l.Errors) > 0 {
			s += " errors " + mapLine(l.Errors)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// logJournalAroundBad logs the box's journal from a second before to a
// second after each of the first requests not answered, and after each
// failed event: what webapp and systemd were doing then.
func logJournalAroundBad(t *testing.T, box *systemdtest.Box, run *ProtoRun) {
	var at []time.Time
	for _, l := range run.Loads {
		for _, b := range l.FirstBad {
			t.Logf("%s: not answered, %s: %s", l.Protocol, protoRelative(run, b.At), b.Error)
			at = append(at, b.At)
		}
	}
	for _, e := range run.Events {
		if e.Error != "" && len(at) < 2*maxFailureRows {
			at = append(at, run.Started.Add(e.Start))
		}
	}
	for _, a := range at {
		since, until := a.Add(-time.Second).Unix(), a.Add(time.Second).Unix()+1
		t.Logf("journal around %s:\n%s", a.UTC().Format("15:04:05.000000"),
			box.Journal(t, "-o", "short-precise", "-q", "--since", fmt.Sprintf("@%d", since), "--until", fmt.Sprintf("@%d", until)))
	}
}
