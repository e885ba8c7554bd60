package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// runSystemd is scenarios 2 and 3: webapp under a real systemd in a
// sandbox that shares the host's network, loaded from the host on its
// http socket (the other three sockets are passed and served too).
func runSystemd(t *testing.T, e *benchEnv, m *Machine) (reload, restart *Disruption) {
	box := systemdtest.Boot(t, systemdtest.Options{Name: "bench"})
	w := installWebapp(t, e, box)
	url := w.url()
	if v := strings.SplitN(box.Systemctl(t, "--version"), "\n", 2)[0]; v != "" {
		m.Systemd = strings.TrimSpace(v)
	}
	overhead := sandboxOverhead(t, box)
	show := func() map[string]string {
		return box.Show(t, "webapp.service", "MainPID", "NRestarts", "ActiveState", "SubState", "Result")
	}
	before := show()

	reload = &Disruption{
		Key: "reload", Title: "webapp under systemd, systemctl reload",
		Program: "webapp (`webapp.socket` + `webapp.service` from `systemd/units`, with `webapp-https.socket`, `webapp-grpc.socket` and `webapp-udp.socket` passed and served too; load on the http socket)", Noun: "reload",
		Action: "`systemctl reload webapp` (`ExecReload=+webapp reload`: returns once the new generation is main and ready)",
		Where:  "under systemd 252 as PID 1 of a sandbox on the host's network, loaded from the host",
		Every:  e.cfg.every, Margin: load.DefaultMargin, Overhead: overhead, ZeroFailures: true,
	}
	for _, mode := range modes {
		res := disruptionRun(t, e, url, mode, e.cfg.reloads, func(ctx context.Context, i int) error {
			_, stderr, err := box.Exec(ctx, "systemctl", "reload", "webapp")
			return cmdError(err, stderr)
		})
		logJournalAround(t, box, res)
		reload.Runs = append(reload.Runs, res)
	}
	after := show()
	reload.Notes = append(reload.Notes, serviceNote(before, after))
	reload.Notes = append(reload.Notes, journalNote(t, e, box, "reload"))

	restart = &Disruption{
		Key: "restart", Title: "webapp under systemd, systemctl restart",
		Program: reload.Program, Noun: "restart",
		Action: "`systemctl restart webapp.service` (the socket stays open: connections queue in its backlog)",
		Where:  reload.Where,
		Every:  e.cfg.every, Margin: load.DefaultMargin, Overhead: overhead, ZeroFailures: true,
	}
	before = show()
	for _, mode := range modes {
		res := disruptionRun(t, e, url, mode, e.cfg.restarts, func(ctx context.Context, i int) error {
			_, stderr, err := box.Exec(ctx, "systemctl", "restart", "webapp.service")
			return cmdError(err, stderr)
		})
		logJournalAround(t, box, res)
		restart.Runs = append(restart.Runs, res)
	}
	after = show()
	restart.Notes = append(restart.Notes, serviceNote(before, after))
	restart.Notes = append(restart.Notes, journalNote(t, e, box, "restart"))

	return reload, restart
}

// logJournalAround logs the sandbox's journal from 2 s before to 2 s
// after each failed request and failed disruption of res (the first few):
// the evidence of what webapp and systemd were doing then.
func logJournalAround(t *testing.T, box *systemdtest.Box, res *load.Result) {
	var at []time.Time
	for _, f := range res.FailureDetails[:min(len(res.FailureDetails), maxFailureRows)] {
		at = append(at, res.Started.Add(f.Offset))
	}
	for _, ev := range res.Events {
		if ev.Error != "" && len(at) < 2*maxFailureRows {
			at = append(at, res.Started.Add(ev.Start))
		}
	}
	for _, a := range at {
		since, until := a.Add(-2*time.Second).Unix(), a.Add(2*time.Second).Unix()+1
		t.Logf("%s: journal around %s (a failure):\n%s", res.Mode, a.UTC().Format("15:04:05.000"),
			box.Journal(t, "-o", "short-precise", "-q", "--since", fmt.Sprintf("@%d", since), "--until", fmt.Sprintf("@%d", until)))
	}
}

// waitServing polls url until it answers 200.
func waitServing(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		res, err := load.Run(ctx, url, load.Options{Clients: 1, MaxRequests: 1, Timeout: 5 * time.Second})
		if err == nil && res.OK == 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			if res != nil && len(res.FailureDetails) > 0 {
				return fmt.Errorf("not serving after %v: %s", timeout, res.FailureDetails[0].Error)
			}
			return fmt.Errorf("not serving after %v", timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sandboxOverhead is the median time of a trivial systemctl call run in
// the sandbox the way the disruptions are.
func sandboxOverhead(t *testing.T, box *systemdtest.Box) time.Duration {
	var ds []time.Duration
	for range 5 {
		t0 := time.Now()
		if _, stderr, err := box.Exec(t.Context(), "systemctl", "is-active", "webapp.service"); err != nil {
			t.Fatalf("systemctl is-active: %v", cmdError(err, stderr))
		}
		ds = append(ds, time.Since(t0))
	}
	return time.Duration(DurationSpread(ds).Median)
}

func serviceNote(before, after map[string]string) string {
	return fmt.Sprintf("`systemctl show webapp.service` before: MainPID=%s NRestarts=%s; after: MainPID=%s NRestarts=%s ActiveState=%s SubState=%s Result=%s.",
		before["MainPID"], before["NRestarts"], after["MainPID"], after["NRestarts"], after["ActiveState"], after["SubState"], after["Result"])
}

// journalNote counts the journal lines of webapp.service at warning or
// above so far, webapp's own and systemd's about the unit apart, logs them,
// and keeps the whole journal when asked to.
func journalNote(t *testing.T, e *benchEnv, box *systemdtest.Box, what string) string {
	all := nonEmptyLines(box.Journal(t, "-u", "webapp.service", "-p", "warning", "-o", "short-monotonic", "-q"))
	own := nonEmptyLines(box.Journal(t, "-u", "webapp.service", "-t", "webapp", "-p", "warning", "-o", "short-monotonic", "-q"))
	if *flagKeep != "" {
		j := box.Journal(t, "-u", "webapp.service", "-u", "webapp.socket", "-o", "short-monotonic", "-q")
		if err := os.WriteFile(filepath.Join(e.logs, "journal-"+what+".log"), []byte(j), 0o644); err != nil {
			t.Error(err)
		}
	}
	if len(own) > 0 {
		t.Logf("webapp's journal after the %s runs, warning and above:\n%s", what, strings.Join(own, "\n"))
	}
	note := fmt.Sprintf("`journalctl -u webapp.service -p warning` after the %s runs: %d entries from webapp", what, len(own))
	if len(own) > 0 {
		note += fmt.Sprintf(" (the last: `%s`)", oneLine(own[len(own)-1]))
	}
	var others []string
	for _, l := range all {
		if !slices.Contains(own, l) {
			others = append(others, l)
		}
	}
	if len(others) > 0 {
		note += fmt.Sprintf(", %d from systemd about the unit (the last: `%s`)", len(others), oneLine(others[len(others)-1]))
	}
	return note + "."
}

func nonEmptyLines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
