package bench

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/livetest"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// cutLine is what webapp's log says of a drain that cut connections.
var cutLine = regexp.MustCompile(`stopped after [^:]+: \d+ connections cut at the deadline`)

// runLongLived is scenario 9: webapp's WebSocket echo (GET /ws) and
// server-sent events (GET /events) under the real systemd, loaded by
// Debian's python3-websockets and Python's http.client (package
// livetest), through reloads and restarts; then the contrast, the same
// clients through reloads with webapp's drain signal switched off.
func runLongLived(t *testing.T, e *benchEnv) *LongLived {
	cfg := e.cfg
	livetest.Require(t)
	l := &LongLived{Interval: 100 * time.Millisecond}
	l.Cases = append(l.Cases, longLivedCase(t, e, LongLivedCase{
		Title: "with the drain signal", Signal: true,
		WS: cfg.liveWS, SSE: cfg.liveSSE, Reloads: cfg.liveReloads, Restarts: cfg.liveRestarts,
	}))
	l.Cases = append(l.Cases, longLivedCase(t, e, LongLivedCase{
		Title: "without it (`WEBAPP_IGNORE_DRAIN=1`, `--drain-timeout=2s`)", DropIn: "Environment=WEBAPP_IGNORE_DRAIN=1 WEBAPP_OPTS=--drain-timeout=2s",
		WS: cfg.liveWS, SSE: cfg.liveSSE, Reloads: cfg.liveContrastReloads,
	}))
	return l
}

// longLivedCase runs one case in a box of its own: webapp.socket and
// webapp.service from systemd/units, the socket on a free port.
func longLivedCase(t *testing.T, e *benchEnv, c LongLivedCase) LongLivedCase {
	box := systemdtest.Boot(t, systemdtest.Options{Name: "bench-live"})
	port := systemdtest.Port(t)
	box.CopyFile(t, e.bins.webapp, "/usr/bin/webapp", 0o755)
	for _, u := range []string{"webapp.socket", "webapp.service"} {
		box.CopyFile(t, filepath.Join("..", "systemd", "units", u), "/etc/systemd/system/"+u, 0o644)
	}
	box.WriteFile(t, "/etc/systemd/system/webapp.socket.d/bench.conf", fmt.Appendf(nil, "[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n", port), 0o644)
	if c.DropIn != "" {
		box.WriteFile(t, "/etc/systemd/system/webapp.service.d/bench.conf", []byte("[Service]\n"+c.DropIn+"\n"), 0o644)
	}
	box.Systemctl(t, "daemon-reload")
	box.Systemctl(t, "start", "webapp.socket")
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/"
	if err := waitServing(t.Context(), url, 30*time.Second); err != nil {
		t.Fatalf("webapp in the sandbox: %v\n%s", err, box.Journal(t, "-u", "webapp.service"))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	show := func(prop string) string {
		out, _, err := box.Exec(ctx, "systemctl", "show", "-P", prop, "webapp.service")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	alive := func(pid string) bool {
		out, _, _ := box.Exec(ctx, "sh", "-c", `s=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/$1/status 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ] && echo alive`, "sh", pid)
		return strings.TrimSpace(out) == "alive"
	}
	clients, err := livetest.Start(ctx, livetest.Options{Port: port, WS: c.WS, SSE: c.SSE})
	if err != nil {
		t.Fatal(err)
	}
	// The clients connect to the first generation, then a second of load.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _, _ := box.Exec(ctx, "ss", "-tnH", "state", "established", fmt.Sprintf("( sport = :%d )", port))
		n := strings.Count(out, "\n")
		if n >= c.WS+c.SSE {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients connected after 60 s", n, c.WS+c.SSE)
		}
	}
	if err := clients.WaitSettled(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	var gens []livetest.Generation
	events := c.Reloads + c.Restarts
	for i := range events {
		verb := "reload"
		// The restarts are spread among the reloads.
		if c.Restarts > 0 && i%(events/c.Restarts) == events/c.Restarts-1 {
			verb = "restart"
		}
		before := show("MainPID")
		start := time.Now()
		_, stderr, err := box.Exec(ctx, "systemctl", verb, "webapp.service")
		returned := time.Now()
		if err != nil {
			c.EventErrors++
			t.Logf("%s %d: %v %s", verb, i+1, err, stderr)
			continue
		}
		after := show("MainPID")
		if verb == "reload" {
			c.ReloadTook = append(c.ReloadTook, returned.Sub(start))
			gens = append(gens, livetest.Generation{PID: after, At: returned})
			for alive(before) && time.Since(returned) < 30*time.Second {
				time.Sleep(20 * time.Millisecond)
			}
			c.OldExit = append(c.OldExit, time.Since(returned))
		}
		time.Sleep(time.Second)
	}
	time.Sleep(time.Second)
	res, err := clients.Stop(2 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tot := res.Totals()
	c.Totals = tot
	c.Reconnects, c.Never = res.Reconnects(gens)
	j := box.Journal(t, "-u", "webapp.service", "-o", "cat")
	// A drain that cut says so twice (its event, then webapp's exit log),
	// in the same words.
	cutLines := map[string]bool{}
	for _, m := range cutLine.FindAllString(j, -1) {
		if !cutLines[m] {
			t.Logf("%s: %s", c.Title, m)
		}
		cutLines[m] = true
	}
	c.CutLines = len(cutLines)
	slices.Sort(c.OldExit)
	t.Logf("%s: %d reloads, %d restarts (%d failed): %v; reconnect median %v; old generation gone median %v; %d drains cut connections",
		c.Title, c.Reloads, c.Restarts, c.EventErrors, tot, livetest.Quantile(c.Reconnects, 0.5), livetest.Quantile(c.OldExit, 0.5), c.CutLines)
	if c.Signal && (tot.Abnormal != 0 || tot.Lost != 0 || tot.Missing != 0 || tot.Repeated != 0) {
		t.Logf("examples: %q", tot.Examples)
	}
	return c
}
