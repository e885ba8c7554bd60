package bench

import (
	"fmt"
	"strings"
	"time"
)

// writeReload257 is scenario 8's section of the report.
func (r *Report) writeReload257(b *strings.Builder, caption string, chart func(string) string) {
	fmt.Fprintf(b, "## 8. Reload under systemd 257: ExecReload= against Type=notify-reload\n\n")
	fmt.Fprintf(b, "The reloads of scenario 2, under Debian 13's systemd 257, in two sandboxes booted from one root: the shipped unit, whose `ExecReload=` runs `webapp reload` and waits for its answer, and the unit with the shipped `webapp-notify-reload.conf` drop-in, where systemd sends SIGHUP and waits for the notification that ends the reload. The price of notify-reload is not in this table: a failed swap fails the reload only when `TimeoutStartSec=` runs out (e2e `TestNotifyReload`).\n\n")
	fmt.Fprintf(b, "| reload | mode | reloads | requests | **failed** | wall time p50 / max |\n|---|---|---|---|---|---|\n")
	for _, d := range r.Reload257 {
		for _, res := range d.Runs {
			var wall []time.Duration
			for _, e := range res.Events {
				wall = append(wall, e.Duration)
			}
			ws := DurationSpread(wall)
			fmt.Fprintf(b, "| %s | %s | %d | %d | **%d** | %s / %s |\n", d.Title, modeName(res.Mode), len(res.Events), res.Requests, res.Failed(),
				fmtDur(time.Duration(ws.Median)), fmtDur(time.Duration(ws.Max)))
		}
	}
	fmt.Fprintf(b, "\n%s\n\n", caption)
	for _, d := range r.Reload257 {
		fmt.Fprintf(b, "### %s\n\n", d.Title)
		writeDisruption(b, d, caption, chart(d.Key), false)
	}
}
