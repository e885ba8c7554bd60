package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// targeted says whether run r is of the variant the targets
// apply to: with the hand-over, or today's webapp where it has none.
func (s *Scale) targeted(v ScaleVariant) bool { return v.Handover || !s.HandoverFlag }

// targetRuns are the runs of the targeted variant for n connections.
func (s *Scale) targetRuns(n int) []ScaleRun {
	var out []ScaleRun
	for _, r := range s.Runs {
		if r.Conns == n && s.targeted(r.Variant) {
			out = append(out, r)
		}
	}
	return out
}

// counts are the connection counts of the runs, in run order.
func (s *Scale) counts() []int {
	var ns []int
	for _, r := range s.Runs {
		if !slices.Contains(ns, r.Conns) {
			ns = append(ns, r.Conns)
		}
	}
	return ns
}

// targetTitle names the targeted variant.
func (s *Scale) targetTitle() string {
	for _, r := range s.Runs {
		if s.targeted(r.Variant) {
			return r.Variant.Title
		}
	}
	return "–"
}

// countFailed is the failed requests and failed reloads at n connections
// in the targeted variant, over both clients.
func (s *Scale) countFailed(n int) (failed int64, events int) {
	for _, r := range s.targetRuns(n) {
		failed += r.Failed
		events += r.EventErrors()
	}
	return failed, events
}

// generatorRun is the generator's targeted run at n connections.
func (s *Scale) generatorRun(n int) (ScaleRun, bool) {
	for _, r := range s.targetRuns(n) {
		if r.Client == "generator" {
			return r, true
		}
	}
	return ScaleRun{}, false
}

// mostOpened is the targeted run at n connections whose clients opened
// the most connections per reload.
func (s *Scale) mostOpened(n int) (ScaleRun, bool) {
	var most ScaleRun
	found := false
	for _, r := range s.targetRuns(n) {
		if !found || r.OpenedShare() > most.OpenedShare() {
			most, found = r, true
		}
	}
	return most, found
}

func (s *Scale) dialsOK(n int) bool {
	runs := s.targetRuns(n)
	for _, r := range runs {
		if len(r.Events) == 0 || r.OpenedShare() > TargetDialsPerReload {
			return false
		}
	}
	return len(runs) > 0
}

func (s *Scale) throughputOK(n int) bool {
	g, ok := s.generatorRun(n)
	return ok && g.Throughput != nil && g.Throughput.Ratio() >= TargetReloadThroughput
}

func (s *Scale) stopFailed() int {
	if s.Stop == nil {
		return 0
	}
	n := 0
	for _, g := range s.Stop.Groups {
		n += g.Failed + g.FailedBefore + g.Open
	}
	return n
}

func (s *Scale) stopOK() bool {
	return s.Stop != nil && s.Stop.Error == "" && s.stopFailed() == 0
}

// writeScaleHeadline writes scenario 10's rows of the headline.
func (s *Scale) writeHeadline(b *strings.Builder) {
	ns := s.counts()
	names := make([]string, len(ns))
	var failed, dials, ratio []string
	allFailed, allDials, allRatio := true, true, true
	for i, n := range ns {
		names[i] = thousands(int64(n))
		f, ev := s.countFailed(n)
		cell := thousands(f)
		if ev > 0 {
			cell += fmt.Sprintf(" (**%d reloads failed**)", ev)
		}
		failed = append(failed, cell)
		allFailed = allFailed && f == 0 && ev == 0
		m, _ := s.mostOpened(n)
		dials = append(dials, fmt.Sprintf("%s (%s, %s)", thousands(int64(m.OpenedPerReload()+0.5)), pct(m.OpenedShare()), m.Client))
		allDials = allDials && s.dialsOK(n)
		g, _ := s.generatorRun(n)
		r := 0.0
		if g.Throughput != nil {
			r = g.Throughput.Ratio()
		}
		ratio = append(ratio, fmtRatio(r))
		allRatio = allRatio && s.throughputOK(n)
	}
	what := fmt.Sprintf("scale, %s keep-alive connections, %d reloads each, %s", strings.Join(names, " / "), s.Reloads, s.targetTitle())
	fmt.Fprintf(b, "| %s: failed requests (generator and wrk) | %s | 0 %s |\n", what, strings.Join(failed, " / "), mark(allFailed))
	fmt.Fprintf(b, "| %s: new connections per reload (the client that opened more; %% of those open) | %s | ≤ %s %s |\n", what, strings.Join(dials, " / "), pct(TargetDialsPerReload), mark(allDials))
	fmt.Fprintf(b, "| %s: throughput within ±%s of a reload / steady (generator) | %s | ≥ %.1f× %s |\n", what, fmtDur(s.Margin), strings.Join(ratio, " / "), TargetReloadThroughput, mark(allRatio))
	if st := s.Stop; st != nil {
		fmt.Fprintf(b, "| scale: `systemctl stop` with %s keep-alive connections open: requests sent and not answered; stop took | %s; %s | 0 %s |\n",
			thousands(int64(st.Conns)), thousands(int64(s.stopFailed())), fmtDur(st.Took), mark(s.stopOK()))
	}
	if k := len(s.Memory); k > 0 {
		m := s.Memory[k-1]
		fmt.Fprintf(b, "| scale: resident memory per idle keep-alive connection (%s open), webapp / plain net/http | %s / %s | |\n",
			thousands(int64(m.Conns)), kib(m.Webapp.PerConn(m.Conns)), kib(m.Plain.PerConn(m.Conns)))
	}
}

// misses lists scenario 10's targets not reached.
func (s *Scale) misses() []string {
	var miss []string
	if !s.HandoverFlag {
		miss = append(miss, "scale: this webapp has no `--conn-handover`: the connection hand-over was not measured, and the targets below are today's behaviour's")
	}
	for _, n := range s.counts() {
		if f, ev := s.countFailed(n); f > 0 || ev > 0 {
			miss = append(miss, fmt.Sprintf("scale, %s connections, %s: %s failed requests, %d failed reloads, target 0", thousands(int64(n)), s.targetTitle(), thousands(f), ev))
		}
		g, ok := s.generatorRun(n)
		if !ok {
			continue
		}
		if m, _ := s.mostOpened(n); !s.dialsOK(n) {
			miss = append(miss, fmt.Sprintf("scale, %s connections: %.0f new connections per reload (%s of those open, %s), target ≤ %s", thousands(int64(n)), m.OpenedPerReload(), pct(m.OpenedShare()), m.Client, pct(TargetDialsPerReload)))
		}
		if !s.throughputOK(n) {
			r := 0.0
			if g.Throughput != nil {
				r = g.Throughput.Ratio()
			}
			miss = append(miss, fmt.Sprintf("scale, %s connections: throughput within ±%s of a reload %s the steady one, target ≥ %.1f×", thousands(int64(n)), fmtDur(s.Margin), fmtRatio(r), TargetReloadThroughput))
		}
	}
	if s.Stop != nil && !s.stopOK() {
		m := fmt.Sprintf("scale: `systemctl stop` with %s connections open: %s requests sent and not answered (or connections not ended)", thousands(int64(s.Stop.Conns)), thousands(int64(s.stopFailed())))
		if s.Stop.Error != "" {
			m += fmt.Sprintf("; the stop failed: `%s`", oneLine(s.Stop.Error))
		}
		miss = append(miss, m+", target 0")
	}
	return miss
}

// writeScale writes scenario 10.
func writeScale(b *strings.Builder, s *Scale, caption string) {
	fmt.Fprintf(b, "## 10. Keep-alive connections by the thousand through reloads (real systemd)\n\n")
	fmt.Fprintf(b, "webapp under systemd 252 in a sandbox with a network namespace of its own (`webapp.socket` and `webapp.service` from `systemd/units` as shipped: `ListenStream=%s`, `Backlog=4096`), loaded on keep-alive connections by wrk (Debian's, run in the sandbox's network namespace with `nsenter --net`) and by baton's generator (in the benchmark's process, its sockets made in that namespace), in turn. webapp.service's open-file limit: ", s.Addr)
	if s.UnitNoFile == "" {
		fmt.Fprintf(b, "the shipped unit sets no `LimitNOFILE=`, so systemd's default applies (`DefaultLimitNOFILE=1024:524288` on Debian 12; in this sandbox the hard limit cannot exceed the %s per process it inherits from the machine), and Go raises the soft limit to the hard one as webapp starts; ", thousands(s.OwnNoFile))
	} else {
		fmt.Fprintf(b, "the shipped unit sets `LimitNOFILE=%s`; ", s.UnitNoFile)
	}
	if s.NoFileDropIn != "" {
		fmt.Fprintf(b, "that was below what the largest count needs, so the benchmark's drop-in adds `%s`; the run had %s", s.NoFileDropIn, s.LimitNOFILE)
	} else {
		fmt.Fprintf(b, "the run had %s, enough for the largest count, so the benchmark adds no drop-in for it", s.LimitNOFILE)
	}
	fmt.Fprintf(b, ". The generator opens its connections before its load begins, %s at a time, each batch once webapp has accepted those before it (the listener's accept queue empty and no handshake pending, in the sandbox's `/proc/net/tcp`): all at once they overflowed the accept queue, and the kernel's retransmissions of the dropped handshakes held some first requests past the 5 s timeout before any reload. wrk's processes (%s connections each) start one after the other, each once the connections of those before it are up and accepted", thousands(int64(s.DialBatch)), thousands(int64(s.WrkConns)))
	fmt.Fprintf(b, ". Each run holds its connections open, then runs %d reloads (`systemctl reload webapp.service`, run in the sandbox: `webapp reload`, which returns once the new generation is main and ready), one every %s or as soon as the previous one returned, if later. ", s.Reloads, fmtDur(s.Every))
	if s.HandoverFlag {
		fmt.Fprintf(b, "Every count runs twice: **with hand-over**, webapp's default (at a reload each idle HTTP/1.1 connection's descriptor goes to the new generation, which serves it on), and **without** (`--conn-handover=false` in `WEBAPP_OPTS`: the old generation answers with `Connection: close` for its idle grace, then closes what is idle, and the clients reconnect to the new one). The targets apply to the first.\n\n")
	} else {
		fmt.Fprintf(b, "This webapp has no `--conn-handover` flag, so only today's behaviour ran: the old generation answers with `Connection: close` for its idle grace, then closes the connections that are idle, and the clients reconnect to the new one.\n\n")
	}
	fmt.Fprintf(b, "- **failed**: the generator's failed requests (no retries; a request that does not end in a complete 2xx response), and wrk's socket errors (connect, read, write, timeout: %s) plus its non-2xx responses; wrk reconnects after an error by itself.\n", fmtDur(s.Timeout))
	fmt.Fprintf(b, "- **new connections per reload**: the connections the clients had to open beyond one per connection of the count, over the reloads, and as a share of the connections open. The generator's are its own count of dials; for wrk, which does not count them, they are the TCP active opens (`/proc/PID/net/snmp`) of the sandbox's network namespace, where only the run's clients connect, from the moment every connection was established to the end of the run.\n")
	fmt.Fprintf(b, "- **accept queue overflows**: the `ListenOverflows` counter of the sandbox's network namespace (`/proc/PID/net/netstat`) over the run: connections whose handshake completed while webapp's accept queue (`Backlog=4096`) was full, which the kernel dropped and the client's retransmission brought again a second or more later.\n")
	fmt.Fprintf(b, "- **throughput within ±%s of a reload / steady**: from the generator's samples, successful responses counted at the moment each completed. A reload's window runs from %s before it began to %s after it returned; the windows of consecutive reloads overlap and are merged. The throughput inside the windows is the responses completed in their union over its length; steady is the rest of the run, from half a second after every client's connection was up (the generator's load runs %s before the first reload and %s after the last) to the moment the load stopped. The worst window is the lowest throughput of a single window against the same steady one.\n", fmtDur(s.Margin), fmtDur(s.Margin), fmtDur(s.Margin), fmtDur(s.Lead), fmtDur(s.Tail))
	fmt.Fprintf(b, "- **reload wall time**: how long `systemctl reload` took, about %s of it running a command in the sandbox (median time of `systemctl is-active` the same way). **Old generation's drain**: what each old generation's `drain-finished` journal entry says (`BATON_DURATION_USEC`, `BATON_STOPPING=false`), with the connections open when its drain began (`drain-started`, `BATON_CONNECTIONS`) and what it cut.\n\n", fmtDur(s.Overhead))
	fmt.Fprintf(b, "| connections | webapp | client | reloads | requests (req/s) | **failed** | failures | new connections per reload (share of those open) | accept queue overflows | throughput within ±%s of a reload / steady (worst window) | reload wall time p50 / max | old generation's drain p50 / max; cut | connections at the drain's start, median (max) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", fmtDur(s.Margin))
	for _, r := range s.Runs {
		target := s.targeted(r.Variant)
		evs := fmt.Sprint(len(r.Events))
		if n := r.EventErrors(); n > 0 {
			evs += fmt.Sprintf(" (**%d failed**)", n)
		}
		failed := fmt.Sprintf("**%s**", thousands(r.Failed))
		if target {
			failed += " " + mark(r.Failed == 0 && r.EventErrors() == 0)
		}
		opened := fmt.Sprintf("%s (%s)", thousands(int64(r.OpenedPerReload()+0.5)), pct(r.OpenedShare()))
		if target {
			opened += " " + mark(len(r.Events) > 0 && r.OpenedShare() <= TargetDialsPerReload)
		}
		th := "–"
		if t := r.Throughput; t != nil {
			th = fmt.Sprintf("%s (%s): %s/s against %s/s", fmtRatio(t.Ratio()), fmtRatio(t.WorstRatio()), thousands(int64(t.Pooled+0.5)), thousands(int64(t.Steady+0.5)))
			if target {
				th += " " + mark(t.Ratio() >= TargetReloadThroughput)
			}
		}
		var wall []time.Duration
		for _, e := range r.Events {
			wall = append(wall, e.Duration)
		}
		ws, ds := DurationSpread(wall), DurationSpread(r.Drains)
		drain := "–"
		if ds.N > 0 {
			drain = fmt.Sprintf("%s / %s; %s", fmtDur(time.Duration(ds.Median)), fmtDur(time.Duration(ds.Max)), thousands(int64(r.DrainCut)))
		}
		if ok := len(r.Events) - r.EventErrors(); ds.N < ok {
			drain += fmt.Sprintf(" (**%d of %d reloads**; %d old generations still running 30 s after the run)", ds.N, ok, r.Lingering)
		}
		dc := "–"
		if len(r.DrainConns) > 0 {
			f := make([]float64, len(r.DrainConns))
			for i, c := range r.DrainConns {
				f[i] = float64(c)
			}
			sp := SpreadOf(f)
			dc = fmt.Sprintf("%s (%s)", thousands(int64(sp.Median)), thousands(int64(sp.Max)))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s (%s/s) | %s | %s | %s | %s | %s | %s / %s | %s | %s |\n",
			thousands(int64(r.Conns)), r.Variant.Title, r.Client, evs, thousands(r.Requests), thousands(int64(r.RPS+0.5)), failed, orDash(r.Failures), opened, thousands(r.ListenOverflows), th,
			fmtDur(time.Duration(ws.Median)), fmtDur(time.Duration(ws.Max)), drain, dc)
	}
	fmt.Fprintf(b, "\n%s\n\n", caption)
	fmt.Fprintf(b, "The clients:\n\n")
	seen := map[string]bool{}
	for _, r := range s.Runs {
		key := r.Client + strconv.Itoa(r.Conns)
		if !seen[key] {
			seen[key] = true
			fmt.Fprintf(b, "- %s connections, %s: %s.\n", thousands(int64(r.Conns)), r.Client, r.Command)
		}
	}
	b.WriteByte('\n')
	for _, r := range s.Runs {
		if len(r.FirstFailures) == 0 {
			continue
		}
		var parts []string
		for _, f := range r.FirstFailures {
			parts = append(parts, fmt.Sprintf("%s (%s, request %d on its connection): `%s`", relativeTo(protoEvents(r.Events), f.Offset, "reload"), f.Class, f.ConnRequest, oneLine(f.Error)))
		}
		fmt.Fprintf(b, "- %s connections, %s, generator: the first %d of %s failed requests: %s.\n", thousands(int64(r.Conns)), r.Variant.Title, len(parts), thousands(r.Failed), strings.Join(parts, "; "))
	}
	for _, r := range s.Runs {
		for i, e := range r.Events {
			if e.Error != "" {
				fmt.Fprintf(b, "- %s connections, %s, %s: reload #%d failed: `%s`\n", thousands(int64(r.Conns)), r.Variant.Title, r.Client, i+1, oneLine(e.Error))
			}
		}
	}
	for _, n := range s.Notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	b.WriteByte('\n')

	if len(s.Memory) > 0 {
		fmt.Fprintf(b, "### Resident memory per open connection\n\n")
		fmt.Fprintf(b, "A fresh server (webapp: `systemctl restart webapp.service`, %s; plain net/http: `bench/cmd/plainhttp`, the same handler and server timeouts, on the host), one request on a connection of its own, then `VmRSS` of `/proc/PID/status`; then the count of keep-alive connections opened, each having had one response to `GET /` and then idle, and `VmRSS` again a second later. Per connection is the difference over the count: what the server holds for an idle kept-alive connection (its goroutine's stack, its buffers), as far as the Go runtime has not given memory back.\n\n", s.Memory[0].Variant.Title)
		fmt.Fprintf(b, "| idle connections | webapp: RSS with none → with them | webapp per connection | plain net/http: RSS with none → with them | plain per connection | webapp / plain |\n|---|---|---|---|---|---|\n")
		for _, m := range s.Memory {
			w, p := m.Webapp.PerConn(m.Conns), m.Plain.PerConn(m.Conns)
			ratio := 0.0
			if p > 0 {
				ratio = w / p
			}
			fmt.Fprintf(b, "| %s | %s → %s | %s | %s → %s | %s | %s |\n", thousands(int64(m.Conns)),
				mib(m.Webapp.Before), mib(m.Webapp.With), kib(w), mib(m.Plain.Before), mib(m.Plain.With), kib(p), fmtRatio(ratio))
		}
		fmt.Fprintf(b, "\n%s\n\n", caption)
		for _, m := range s.Memory {
			for _, e := range []string{m.WebappError, m.PlainError} {
				if e != "" {
					fmt.Fprintf(b, "- %s connections: `%s`\n", thousands(int64(m.Conns)), oneLine(e))
				}
			}
		}
	}

	if st := s.Stop; st != nil {
		fmt.Fprintf(b, "### `systemctl stop` with %s keep-alive connections open\n\n", thousands(int64(st.Conns)))
		fmt.Fprintf(b, "webapp (%s), freshly started, with %s keep-alive connections of the benchmark's own client, each having had one response: half of them then stay idle, the other half each send one `GET /` every %s, spread evenly over the period, so that at any moment some request is about to be sent. Once each of the paced ones has sent two more, `systemctl stop webapp.service` runs. Each connection then ends one way: its answer carried `Connection: close` (then the client closes it), the server closed it while no request was outstanding (closed while idle), or a request was sent and no answer came (**failed**: written into a connection the server closed, or cut). The stop took **%s** (`systemctl stop`'s wall time, about %s of it the sandbox's command overhead); webapp's drain, by its `drain-finished` entry, %s",
			st.Variant.Title, thousands(int64(st.Conns)), fmtDur(st.Period), fmtDur(st.Took), fmtDur(s.Overhead), fmtDur(st.Drain))
		if st.DrainError != "" {
			fmt.Fprintf(b, " (%s)", st.DrainError)
		}
		fmt.Fprintf(b, ", %d connections cut.\n\n", st.Cut)
		fmt.Fprintf(b, "| connections | requests sent during the stop | answered with `Connection: close` | closed while idle | **failed** (sent, no answer) | failed before the stop | still open once webapp had exited |\n|---|---|---|---|---|---|---|\n")
		for _, g := range st.Groups {
			fmt.Fprintf(b, "| %s, %s | %s | %s | %s | **%s** %s | %d | %d |\n", thousands(int64(g.Conns)), g.Title, thousands(g.Sent), thousands(int64(g.AnsweredClose)), thousands(int64(g.ClosedIdle)),
				thousands(int64(g.Failed)), mark(g.Failed == 0), g.FailedBefore, g.Open)
		}
		fmt.Fprintf(b, "\n%s\n\n", caption)
		if st.Error != "" {
			fmt.Fprintf(b, "- The stop failed: `%s`\n", oneLine(st.Error))
		}
		for _, g := range st.Groups {
			if len(g.FirstErrors) > 0 {
				fmt.Fprintf(b, "- %s: the first failures: `%s`\n", g.Title, strings.Join(g.FirstErrors, "`; `"))
			}
		}
		b.WriteByte('\n')
	}
}

func protoEvents(evs []ProtoEvent) []load.Event {
	out := make([]load.Event, len(evs))
	for i, e := range evs {
		out[i] = load.Event{Index: i, Start: e.Start, Duration: e.Duration}
	}
	return out
}

// thousands writes n with a comma every three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}

func pct(x float64) string {
	switch {
	case x == 0:
		return "0 %"
	case x < 0.001:
		return fmt.Sprintf("%.3f %%", 100*x)
	case x < 0.1:
		return fmt.Sprintf("%.1f %%", 100*x)
	}
	return fmt.Sprintf("%.0f %%", 100*x)
}

func kib(bytes float64) string {
	if bytes == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f KiB", bytes/1024)
}

func mib(bytes int64) string {
	if bytes == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20))
}
