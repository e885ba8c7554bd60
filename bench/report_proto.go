package bench

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/livetest"
	"github.com/baton-dev/baton/internal/load"
)

// writeProtocols writes scenario 6.
func writeProtocols(b *strings.Builder, p *Protocols, caption string) {
	fmt.Fprintf(b, "## 6. Every protocol through reloads and restarts (real systemd)\n\n")
	fmt.Fprintf(b, "webapp under systemd 252 in a sandbox on the host's network, as in scenario 2, with all four of its sockets: `webapp.socket` (http: HTTP/1.1 and h2c), `webapp-https.socket` (TLS, h2 by ALPN), `webapp-grpc.socket` (gRPC over h2c) and `webapp-udp.socket` (`ListenDatagram=`; every datagram answered with `<pid> <the same bytes>`), and a certificate made for the run in `/etc/webapp` (key 0600, passed by `LoadCredential=` at start and handed over by `webapp reload` at each reload). Each protocol is loaded by its own client from the host, then all four at once. Each run loads for %s, runs one reload every %s or one restart every %s (or as soon as the previous one returned, if later; restarts are spaced so that they stay within systemd's default start limit of 5 starts in 10 s, past which the service and its sockets fail), then loads for %s more; the reload run and the restart run are separate.\n\n",
		fmtDur(p.Lead), fmtDur(p.ReloadEvery), fmtDur(p.RestartEvery), fmtDur(p.Tail))
	fmt.Fprintf(b, "A request is **not answered** when the client did not get what was asked for: an h2load request without a 2xx response (h2load's failed, errored and timed-out requests), a ghz call whose status is not OK, a datagram without its echo within the client's wait. h2load does not reconnect after an HTTP/2 GOAWAY (its remaining requests would count as failed), so it runs again and again for a short count; \"overlapping\" is the number of client runs that were under way during an event, each of which had to complete all of its requests. ghz (grpc-go) handles the two-phase GOAWAY of `GracefulStop` and retries the calls the server did not process, as any grpc-go client does. Server CPU is the CPU time of the slice webapp.service ran in (every generation, `webapp reload` included: `cpu.stat` of its cgroup) over the run, divided by the requests of the run; throughput is requests over the client's time under load, client start-ups included.\n\n")
	fmt.Fprintf(b, "| protocol | events | client runs (overlapping an event) | requests | **not answered** | the client's counts | throughput | server CPU per request | main PIDs |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range p.Scenarios {
		for _, run := range sc.Runs {
			var total int64
			for _, l := range run.Loads {
				total += l.Requests
			}
			cpu := "–"
			if total > 0 && run.CPU > 0 {
				cpu = fmtDur(run.CPU / time.Duration(total))
				if len(run.Loads) > 1 {
					cpu += fmt.Sprintf(" (of all %d clients' requests; %s in all)", len(run.Loads), fmtDur(run.CPU))
				}
			}
			for i, l := range run.Loads {
				name := l.Protocol
				if len(run.Loads) > 1 {
					name = sc.Title + ": " + l.Protocol
				}
				events, c, pids := "", "", ""
				if i == 0 {
					events = eventsOf(run)
					c = cpu
					pids = fmt.Sprint(run.MainPIDs)
				} else {
					c = "″"
				}
				fmt.Fprintf(b, "| %s | %s | %d (%d) | %d | **%d** | %s | %.0f/s | %s | %s |\n",
					name, events, l.Runs, l.Overlapping, l.Requests, l.Bad(), clientCounts(l), l.RPS(), c, pids)
			}
		}
	}
	fmt.Fprintf(b, "\n%s\n\n", caption)
	fmt.Fprintf(b, "The clients:\n\n")
	seen := map[string]bool{}
	for _, sc := range p.Scenarios {
		for _, run := range sc.Runs {
			for _, l := range run.Loads {
				if !seen[l.Protocol] {
					seen[l.Protocol] = true
					fmt.Fprintf(b, "- %s: %s.\n", l.Protocol, l.Client)
				}
			}
		}
	}
	b.WriteByte('\n')
	for _, n := range p.Notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	for _, sc := range p.Scenarios {
		for _, run := range sc.Runs {
			for _, l := range run.Loads {
				if len(l.PIDs) == 0 {
					continue
				}
				var parts []string
				for _, pid := range slices.Sorted(maps.Keys(l.PIDs)) {
					parts = append(parts, fmt.Sprintf("%d: %d", pid, l.PIDs[pid]))
				}
				fmt.Fprintf(b, "- %s, through %ss: datagrams answered by pid, in pid order: %s.\n", sc.Title, run.Noun, strings.Join(parts, ", "))
			}
		}
	}
	if n := errorsLike(p, "the connection is draining"); n > 0 {
		fmt.Fprintf(b, "- %d gRPC %s ended `UNAVAILABLE` \"the connection is draining\": grpc-go's own error, on the client, for a call that took a connection just as that connection's GOAWAY arrived. grpc-go retries such a call once, transparently, and reports this error when the retry meets the same race; its maintainers call it still possible, and very unlikely, since they fixed the race between draining and new calls (grpc/grpc-go#2767, #2919). Such a call never reached webapp.\n", n, plural(n, "call", "calls"))
	}
	for _, sc := range p.Scenarios {
		for _, run := range sc.Runs {
			for _, l := range run.Loads {
				if len(l.FirstBad) == 0 {
					continue
				}
				var parts []string
				for _, bad := range l.FirstBad {
					parts = append(parts, fmt.Sprintf("%s: `%s`", protoRelative(run, bad.At), oneLine(bad.Error)))
				}
				fmt.Fprintf(b, "- %s, through %ss, %s: the first %d of %d not answered: %s.\n", sc.Title, run.Noun, l.Protocol, len(l.FirstBad), l.Bad(), strings.Join(parts, "; "))
			}
			for i, e := range run.Events {
				if e.Error != "" {
					fmt.Fprintf(b, "- %s, %s #%d failed: `%s`\n", sc.Title, run.Noun, i+1, oneLine(e.Error))
				}
			}
		}
	}
	b.WriteByte('\n')
}

// protoRelative places t relative to the nearest event of run.
func protoRelative(run *ProtoRun, t time.Time) string {
	evs := make([]load.Event, len(run.Events))
	for i, e := range run.Events {
		evs[i] = load.Event{Index: i, Start: e.Start, Duration: e.Duration}
	}
	return relativeTo(evs, t.Sub(run.Started), run.Noun)
}

// eventsOf says how many events a run had, how long they took, and how
// many failed.
func eventsOf(run *ProtoRun) string {
	var ds []time.Duration
	failed := 0
	for _, e := range run.Events {
		ds = append(ds, e.Duration)
		if e.Error != "" {
			failed++
		}
	}
	sp := DurationSpread(ds)
	s := fmt.Sprintf("%d %ss (wall p50 %s, max %s)", len(run.Events), run.Noun, fmtDur(time.Duration(sp.Median)), fmtDur(time.Duration(sp.Max)))
	if failed > 0 {
		s += fmt.Sprintf(", **%d failed**", failed)
	}
	return s
}

// clientCounts is what the client itself reported.
func clientCounts(l ProtoLoad) string {
	var parts []string
	switch {
	case l.Statuses != nil:
		parts = append(parts, "status "+mapLine(l.Statuses))
	case l.PIDs != nil:
		parts = append(parts, fmt.Sprintf("answered by %d pids, %d after more than 1 s, longest wait %s", len(l.PIDs), l.Late, fmtDur(l.MaxWait)))
	default:
		parts = append(parts, fmt.Sprintf("failed %d, errored %d, timeout %d", l.Failed, l.Errored, l.Timeout))
	}
	if l.Broken > 0 {
		parts = append(parts, fmt.Sprintf("**%d runs without a report**", l.Broken))
	}
	if len(l.Errors) > 0 {
		parts = append(parts, "errors: "+mapLine(l.Errors))
	}
	return strings.Join(parts, "; ")
}

// protoBadOf sums a scenario's requests not answered, over its runs.
func protoBadOf(sc *ProtoScenario) string {
	var bad, total int64
	var parts []string
	evFailed := 0
	for _, run := range sc.Runs {
		b, e := run.Bad()
		bad += b
		evFailed += e
		for _, l := range run.Loads {
			total += l.Requests
		}
		parts = append(parts, fmt.Sprintf("%d %ss", len(run.Events), run.Noun))
	}
	s := fmt.Sprintf("%d of %d in %s", bad, total, strings.Join(parts, " and "))
	if evFailed > 0 {
		s += fmt.Sprintf("; **%d events failed**", evFailed)
	}
	return s
}

// protoClean says whether every request of the scenario was answered,
// every event succeeded and every client run reported.
func protoClean(sc *ProtoScenario) bool {
	for _, run := range sc.Runs {
		if b, e := run.Bad(); b > 0 || e > 0 {
			return false
		}
		for _, l := range run.Loads {
			if l.Broken > 0 || l.Requests == 0 {
				return false
			}
		}
	}
	return true
}

// writeDrain writes scenario 7.
func writeDrain(b *strings.Builder, d *Drain, caption string) {
	fmt.Fprintf(b, "## 7. What each protocol does at the drain\n\n")
	fmt.Fprintf(b, "webapp on its own four sockets (no systemd; `--drain-timeout %s`, idle grace %s) gets SIGTERM, once per round (%s), with HTTP/2 connections open on its http socket (h2c, Go's `net/http` client, one connection per client) and `webapp.v1.Ticker/Ticks` streams open on its grpc socket (grpc-go, each stream having had its first tick). Exit is from the signal to the moment the benchmark reaps the process; \"drain\" is what webapp's log says the drain took, and \"cut\" the connections it cut at the deadline. At the drain webapp's gRPC server ends the Ticks streams with `UNAVAILABLE` \"draining, retry\" (the status a client retries, on the next generation under systemd) and calls `GracefulStop`; its HTTP/2 server serves a busy connection until it has been idle for the idle grace (or for half the drain deadline), then sends GOAWAY, and Go's HTTP/2 server keeps a connection open for another second after a graceful GOAWAY once its streams are done, unless the client closes it first (`http2goAwayTimeout` in net/http, golang.org/issue/18701). In the busy case each HTTP/2 client goes on sending until its first failed request: without systemd the listener is closed at the drain, so a client whose connection got its GOAWAY finds nothing to reconnect to (under systemd it would queue for the next generation).\n\n",
		fmtDur(d.DrainTimeout), fmtDur(d.IdleGrace), rounds(d.Rounds))
	fmt.Fprintf(b, "| situation | SIGTERM → exit, median (min–max) | drain (webapp's log) | cut | Ticks streams ended `UNAVAILABLE` \"draining, retry\" | requests answered during the drain | then |\n|---|---|---|---|---|---|---|\n")
	for _, c := range d.Cases {
		ends := fmt.Sprintf("%d of %d", c.Unavailable, c.Streams*len(c.Exit))
		if len(c.StreamEnds) > 0 {
			ends += "; **others: " + intMapLine(c.StreamEnds) + "**"
		}
		during, then := "–", "–"
		if c.Busy {
			during = fmt.Sprint(c.DuringDrain)
			then = intMapLine(c.AfterGoaway)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", c.Situation, durSpread(DurationSpread(c.Exit)), durSpread(DurationSpread(c.Took)), cutOf(c), ends, during, then)
	}
	fmt.Fprintf(b, "\n%s\n\n", caption)
	for _, c := range d.Cases {
		if c.Line != "" {
			fmt.Fprintf(b, "- %s, the last round's log: `%s`.\n", c.Situation, c.Line)
		}
	}
	b.WriteByte('\n')
}

// cutOf says what the drains of a case cut.
func cutOf(c DrainCase) string {
	n := sum(c.Cut)
	if n == 0 {
		return fmt.Sprintf("no connection cut in %s", rounds(len(c.Cut)))
	}
	return fmt.Sprintf("**%d connections cut** in %s", n, rounds(len(c.Cut)))
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// mapLine writes m as "k n, k n", largest first.
func mapLine[K comparable, V int | int64](m map[K]V) string {
	type kv struct {
		k string
		n V
	}
	var kvs []kv
	for k, n := range m {
		kvs = append(kvs, kv{fmt.Sprint(k), n})
	}
	slices.SortFunc(kvs, func(a, b kv) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return cmp.Compare(a.k, b.k)
	})
	parts := make([]string, len(kvs))
	for i, x := range kvs {
		parts[i] = fmt.Sprintf("%s %d", x.k, x.n)
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

func intMapLine(m map[string]int) string { return mapLine(m) }

// errorsLike counts the client errors of scenario 6 whose message holds
// substr.
func errorsLike(p *Protocols, substr string) int64 {
	var n int64
	for _, sc := range p.Scenarios {
		for _, run := range sc.Runs {
			for _, l := range run.Loads {
				for msg, k := range l.Errors {
					if strings.Contains(msg, substr) {
						n += k
					}
				}
			}
		}
	}
	return n
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// writeLongLived writes scenario 9.
func writeLongLived(b *strings.Builder, l *LongLived, caption string) {
	fmt.Fprintf(b, "## 9. Long-lived connections through reloads and restarts\n\n")
	fmt.Fprintf(b, "webapp under the real systemd (webapp.socket and webapp.service from `systemd/units`, the socket moved to a free port) with WebSocket clients on `GET /ws` (Debian's python3-websockets, asyncio, 125 clients a process), each sending a numbered message every %s, reconnecting when closed and resending what was not echoed, and server-sent-event clients on `GET /events` (Python's http.client, one thread each) resuming with `Last-Event-ID`. At a drain webapp's handlers see `baton.Draining(r.Context())`: `/ws` echoes what it has read and closes with 1001 (going away), `/events` ends after the current event. A close is clean when it is 1001 with the closing handshake; abnormal is any other (1006: the connection cut without a close frame). The reconnect is from the return of `systemctl reload` to each client's first connection to the new MainPID (negative: before it returned), over every reload and client; the old generation's exit is from the same moment. The contrast switches the drain signal off (a test switch of webapp) with a 2 s drain deadline.\n\n", fmtDur(l.Interval))
	fmt.Fprintf(b, "| case | clients | events | messages sent / echoed / lost | closes clean / abnormal | SSE ids missing / repeated | reconnect to the new pid: median, p90, max | old generation exited, median (max) | drains that cut |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range l.Cases {
		t := c.Totals
		events := fmt.Sprintf("%d reloads", c.Reloads)
		if c.Restarts > 0 {
			events += fmt.Sprintf(", %d restarts", c.Restarts)
		}
		if c.EventErrors > 0 {
			events += fmt.Sprintf(" (**%d failed**)", c.EventErrors)
		}
		reconnect := "–"
		if len(c.Reconnects) > 0 {
			reconnect = fmt.Sprintf("%s, %s, %s", fmtDur(durQ(c.Reconnects, 0.5)), fmtDur(durQ(c.Reconnects, 0.9)), fmtDur(durQ(c.Reconnects, 1)))
		}
		if c.Never > 0 {
			reconnect += fmt.Sprintf("; **%d never**", c.Never)
		}
		old := "–"
		if len(c.OldExit) > 0 {
			old = fmt.Sprintf("%s (%s)", fmtDur(durQ(c.OldExit, 0.5)), fmtDur(durQ(c.OldExit, 1)))
		}
		fmt.Fprintf(b, "| %s | %d WebSocket, %d SSE | %s | %d / %d / %d | %d / %d | %d / %d | %s | %s | %d |\n",
			c.Title, c.WS, c.SSE, events, t.Sent, t.Echoed, t.Lost, t.Clean, t.Abnormal, t.Missing, t.Repeated, reconnect, old, c.CutLines)
	}
	fmt.Fprintf(b, "\n%s\n\n", caption)
}

// durQ is the q-quantile of sorted durations (0 for none): the same
// nearest-rank one as livetest.Quantile.
func durQ(sorted []time.Duration, q float64) time.Duration { return livetest.Quantile(sorted, q) }
