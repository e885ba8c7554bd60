package bench

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// reload257Variants are scenario 8's two ways of reloading under systemd
// 257: the shipped unit's reload command, and the Type=notify-reload
// drop-in shipped as an example.
var reload257Variants = []struct {
	key, title, action string
	notifyReload       bool
}{
	{"reload257-execreload", "webapp under systemd 257, systemctl reload through ExecReload=",
		"`systemctl reload webapp` with the shipped unit (`ExecReload=+webapp reload`: returns once the new generation is main and ready)", false},
	{"reload257-notifyreload", "webapp under systemd 257, systemctl reload with Type=notify-reload",
		"`systemctl reload webapp` with the `webapp-notify-reload.conf` drop-in (`Type=notify-reload`: systemd sends SIGHUP, and the datagram announcing the new generation, RELOADING=1 and READY=1 with MAINPID=, ends the reload)", true},
}

// runSystemd257 is scenario 8: `systemctl reload webapp` under load under
// Debian 13's systemd 257, once through the shipped ExecReload= client and
// once with the Type=notify-reload drop-in, each in a sandbox of its own
// booted from the same Debian root.
func runSystemd257(t *testing.T, e *benchEnv) []*Disruption {
	var sd systemdtest.Systemd
	for _, v := range systemdtest.Versions(t) {
		if v.Name == "systemd257" {
			sd = v
		}
	}
	sd.Require(t)
	var out []*Disruption
	for _, v := range reload257Variants {
		box := systemdtest.Boot(t, systemdtest.Options{Name: "bench257", Root: sd.Root})
		w := installWebapp(t, e, box)
		if v.notifyReload {
			box.CopyFile(t, filepath.Join("..", "systemd", "units", "webapp-notify-reload.conf"),
				"/etc/systemd/system/webapp.service.d/notify-reload.conf", 0o644)
			box.Systemctl(t, "daemon-reload")
			box.Systemctl(t, "restart", "webapp.service")
			if err := waitServing(t.Context(), w.url(), 30*time.Second); err != nil {
				t.Fatalf("webapp with the notify-reload drop-in: %v", err)
			}
		}
		if p := box.Show(t, "webapp.service", "Type", "ExecReload"); (p["Type"] == "notify-reload") != v.notifyReload ||
			(p["ExecReload"] == "") != v.notifyReload {
			t.Fatalf("%s: webapp.service is %v", v.key, p)
		}
		d := &Disruption{
			Key: v.key, Title: v.title,
			Program: "webapp (the units of `systemd/units`, all four sockets passed and served; load on the http socket)", Noun: "reload",
			Action: v.action,
			Where:  "under Debian 13's systemd 257 as PID 1 of a sandbox on the host's network (its root built by `mmdebstrap`, `systemdtest.DebianRoot`), loaded from the host",
			Every:  e.cfg.every, Margin: load.DefaultMargin, Overhead: sandboxOverhead(t, box), ZeroFailures: true,
		}
		for _, mode := range modes {
			res := disruptionRun(t, e, w.url(), mode, e.cfg.reloads, func(ctx context.Context, i int) error {
				_, stderr, err := box.Exec(ctx, "systemctl", "reload", "webapp")
				return cmdError(err, stderr)
			})
			logJournalAround(t, box, res)
			d.Runs = append(d.Runs, res)
		}
		d.Notes = append(d.Notes, journalNote(t, e, box, v.key))
		out = append(out, d)
	}
	return out
}
