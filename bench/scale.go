package bench

import (
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// Targets of scenario 10 (issue 12), for webapp with its connection
// hand-over.
const (
	// TargetDialsPerReload is the largest acceptable share of the open
	// connections that a reload makes the clients open anew.
	TargetDialsPerReload = 0.01
	// TargetReloadThroughput is the least acceptable throughput within
	// the reload windows over the steady throughput.
	TargetReloadThroughput = 0.8
)

// Scale is scenario 10: keep-alive connections by the thousand through
// reloads under the real systemd, loaded by wrk and by the generator,
// with webapp's connection hand-over and without it; webapp's memory per
// open connection against plain net/http's; a stop with every connection
// open.
type Scale struct {
	// Reloads is the number of reloads per run, Every their period,
	// Margin the half-width of a reload's window, Lead and Tail the
	// generator's load before the first reload (every client connected
	// by then) and after the last.
	Reloads                   int
	Every, Margin, Lead, Tail time.Duration
	// Timeout is every client's per-request timeout.
	Timeout time.Duration
	// DialBatch is how many connections the generator opens at once
	// before its load; WrkConns how many each wrk process holds.
	DialBatch, WrkConns int
	// Addr is webapp.socket's address (in the box's own network).
	Addr string
	// HandoverFlag says whether this webapp has --conn-handover; without
	// it only today's behaviour ran.
	HandoverFlag bool
	// LimitNOFILE is webapp.service's open-file limit in the run (its
	// main process's, and systemctl show's), UnitNoFile the shipped
	// unit's LimitNOFILE= ("" if it sets none), and NoFileDropIn the
	// drop-in line the benchmark added ("" when none was needed).
	LimitNOFILE, UnitNoFile, NoFileDropIn string
	// OwnNoFile is the benchmark's own hard open-file limit, which the
	// sandbox inherits.
	OwnNoFile int64
	// Overhead is the median time of a trivial systemctl call in the
	// sandbox, part of every reload's wall time.
	Overhead time.Duration
	Runs     []ScaleRun
	Memory   []ScaleMemory
	Stop     *ScaleStop
	// Notes are facts the run checked, shown under the tables.
	Notes []string
}

// ScaleVariant is how webapp ran: with the connection hand-over (its
// default) or without it (--conn-handover=false, or a webapp that has
// no such flag).
type ScaleVariant struct {
	Handover bool
	// Title names it in the report; Opts is WEBAPP_OPTS.
	Title, Opts string
}

// ScaleRun is one client's run at one connection count in one variant.
type ScaleRun struct {
	Conns   int
	Variant ScaleVariant
	// Client is "generator" or "wrk"; Command how it ran.
	Client, Command string
	// Requests were answered or failed; Failed is the generator's failed
	// requests, or wrk's socket errors and non-2xx responses; Failures
	// says which (by class).
	Requests, Failed int64
	Failures         string
	RPS              float64
	// Opened is the connections the clients opened beyond one per
	// connection of the count: the generator's Dials less its clients;
	// for wrk, which does not count them, the TCP active opens of the
	// box's network namespace (where only the run's clients connect)
	// from the moment every connection was up to the end of the run.
	Opened int64
	// ListenOverflows is the box's TcpExt ListenOverflows over the run:
	// connections the kernel dropped while webapp's accept queue was
	// full (the client's retransmission tried again a second or more
	// later).
	ListenOverflows int64
	// Throughput is the generator's, from its samples (nil for wrk).
	Throughput *Throughput
	// Events are the reloads, from the run's start.
	Events []ProtoEvent
	// Drains are the old generations' drains after the run's reloads, as
	// webapp's drain-finished journal entries report them; DrainConns the
	// connections open when each began (drain-started), DrainCut the
	// connections they cut.
	Drains     []time.Duration
	DrainConns []int
	DrainCut   int
	// Lingering counts the old generations still running when the
	// benchmark stopped waiting for their drain-finished entries (30 s
	// after the run), counted only when some are missing.
	Lingering int
	// FirstFailures are the generator's first failed requests.
	FirstFailures []load.Failure
}

// OpenedPerReload is Opened divided by the reloads that ran.
func (r ScaleRun) OpenedPerReload() float64 {
	if len(r.Events) == 0 {
		return 0
	}
	return float64(r.Opened) / float64(len(r.Events))
}

// OpenedShare is OpenedPerReload as a share of the open connections.
func (r ScaleRun) OpenedShare() float64 {
	if r.Conns == 0 {
		return 0
	}
	return r.OpenedPerReload() / float64(r.Conns)
}

// EventErrors counts the reloads that failed.
func (r ScaleRun) EventErrors() int {
	n := 0
	for _, e := range r.Events {
		if e.Error != "" {
			n++
		}
	}
	return n
}

// ScaleMemory is the resident memory of webapp (under systemd) and of
// plain net/http with the same handler, fresh, with no connection and
// with Conns idle keep-alive connections that each had one response.
type ScaleMemory struct {
	Conns int
	// Variant is webapp's.
	Variant                 ScaleVariant
	Webapp, Plain           RSSPair
	WebappError, PlainError string
}

// RSSPair is VmRSS, in bytes, before and with the connections open.
type RSSPair struct{ Before, With int64 }

// PerConn is the added resident memory per connection, in bytes.
func (p RSSPair) PerConn(conns int) float64 {
	if conns == 0 || p.With == 0 {
		return 0
	}
	return float64(p.With-p.Before) / float64(conns)
}

// ScaleStop is `systemctl stop webapp.service` with keep-alive
// connections open: half of them truly idle (one response each, then
// nothing), half sending one request every Period.
type ScaleStop struct {
	Conns   int
	Period  time.Duration
	Variant ScaleVariant
	// Took is how long `systemctl stop` took; Drain and Cut what webapp's
	// drain-finished journal entry says.
	Took, Drain time.Duration
	Cut         int
	DrainError  string
	Error       string
	Groups      []StopGroup
}

// StopGroup counts how a group of the stop's connections ended.
type StopGroup struct {
	// Title says what the group's connections did.
	Title string
	Conns int
	// Sent is the requests sent after the stop began; AnsweredClose the
	// connections whose last answer carried Connection: close;
	// ClosedIdle those the server closed while no request was
	// outstanding; Failed those with a request sent and no answer;
	// FailedBefore those that failed before the stop began; Open those
	// still open when the benchmark stopped waiting.
	Sent                                                  int64
	AnsweredClose, ClosedIdle, Failed, FailedBefore, Open int
	// FirstErrors are the first failures' messages.
	FirstErrors []string
}
