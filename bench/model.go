package bench

import (
	"time"

	"github.com/baton-dev/baton/internal/livetest"
	"github.com/baton-dev/baton/internal/load"
)

// Report is everything one run of the benchmark measured. Sections the run
// skipped are nil.
type Report struct {
	Machine Machine
	// Command is the command that produced the report; GoTest the go test
	// command line it ran.
	Command, GoTest string
	// Commit is the baton commit measured, with " (modified)" when the
	// working tree differed from it.
	Commit  string
	Started time.Time
	Took    time.Duration
	Full    bool
	Clients int

	Steady  *Steady
	Reload  *Disruption // scenario 2
	Restart *Disruption // scenario 3
	Stop    *Stop
	// Alternatives are scenario 5's programs, in report order.
	Alternatives []*Disruption
	Protocols    *Protocols // scenario 6
	Drain        *Drain     // scenario 7
	// Reload257 is scenario 8: reloads under systemd 257 through
	// ExecReload= and with Type=notify-reload, in that order.
	Reload257 []*Disruption
	LongLived *LongLived // scenario 9
	Scale     *Scale     // scenario 10
}

// Machine describes where the benchmark ran.
type Machine struct {
	Cores     int
	CPU       string
	Kernel    string
	OS        string
	GoVersion string
	Systemd   string // in the sandbox
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end
	// of the run: the machine may be shared.
	LoadBefore, LoadAfter string
}

// RunStats summarise one load run.
type RunStats struct {
	Requests int64
	Failed   int64
	RPS      float64
	P50, P99 time.Duration
	// CPU is the server process's CPU time (user and system, all its
	// threads) over the run, from /proc/PID/stat.
	CPU time.Duration
}

// CPUPerRequest is the server's CPU time per request.
func (s RunStats) CPUPerRequest() time.Duration {
	if s.Requests == 0 {
		return 0
	}
	return s.CPU / time.Duration(s.Requests)
}

// StatsOf summarises res.
func StatsOf(res *load.Result) RunStats {
	return RunStats{Requests: res.Requests, Failed: res.Failed(), RPS: res.RPS, P50: res.Latency.P50, P99: res.Latency.P99}
}

// Steady is scenario 1: webapp and a plain net/http server loaded in turn.
type Steady struct {
	Rounds   int
	Duration time.Duration // of each of the four runs of a round
	Modes    []SteadyMode
	// AllSockets says webapp served its https, grpc and udp sockets too.
	AllSockets bool
}

// SteadyMode is one connection mode of scenario 1; the slices have one
// entry per round, each server's two runs of the round taken together.
type SteadyMode struct {
	Mode          load.Mode
	Webapp, Plain []RunStats
	// HTTPOnly is webapp serving its http socket alone, loaded in the
	// same rounds: what the other three servers cost.
	HTTPOnly []RunStats
	// PlainFour is webapp's four servers without baton (plainhttp with
	// h2c, TLS, gRPC and UDP), loaded in the same rounds: what baton
	// costs a service that serves the same.
	PlainFour []RunStats
	// WebappFirst says, per round, whether webapp was loaded first.
	WebappFirst []bool
}

// Ratios returns webapp's throughput over the plain server's, per round.
func (m SteadyMode) Ratios() []float64 {
	r := make([]float64, 0, len(m.Webapp))
	for i := range m.Webapp {
		if i < len(m.Plain) && m.Plain[i].RPS > 0 {
			r = append(r, m.Webapp[i].RPS/m.Plain[i].RPS)
		}
	}
	return r
}

// CPURatios returns the plain server's CPU time per request over
// webapp's, per round: like Ratios, 1 is parity and less is webapp
// costing more.
func (m SteadyMode) CPURatios() []float64 { return cpuRatios(m.Webapp, m.Plain) }

// FourRatios returns webapp's throughput over that of the same four
// servers without baton, and the CPU ratio likewise (without over with),
// per round.
func (m SteadyMode) FourRatios() (rps, cpu []float64) {
	for i := range m.Webapp {
		if i < len(m.PlainFour) && m.PlainFour[i].RPS > 0 {
			rps = append(rps, m.Webapp[i].RPS/m.PlainFour[i].RPS)
		}
	}
	return rps, cpuRatios(m.Webapp, m.PlainFour)
}

// HTTPOnlyRatios returns webapp's throughput over that of webapp serving
// its http socket alone, and the CPU ratio likewise (http only over all
// four), per round.
func (m SteadyMode) HTTPOnlyRatios() (rps, cpu []float64) {
	for i := range m.Webapp {
		if i < len(m.HTTPOnly) && m.HTTPOnly[i].RPS > 0 {
			rps = append(rps, m.Webapp[i].RPS/m.HTTPOnly[i].RPS)
		}
	}
	return rps, cpuRatios(m.Webapp, m.HTTPOnly)
}

// cpuRatios is, per round, base's CPU time per request over w's.
func cpuRatios(w, base []RunStats) []float64 {
	r := make([]float64, 0, len(w))
	for i := range w {
		if i < len(base) && w[i].CPU > 0 && base[i].Requests > 0 && w[i].Requests > 0 {
			r = append(r, float64(base[i].CPUPerRequest())/float64(w[i].CPUPerRequest()))
		}
	}
	return r
}

// Disruption is a set of load runs, one per mode, each with a series of
// disruptions (reloads, restarts, upgrades) of one server.
type Disruption struct {
	// Key names the chart file; Title heads the report section.
	Key, Title string
	// Program says what served, Action what each disruption did (a
	// command, in Markdown), Noun names one disruption ("reload"), Where
	// says where the server ran.
	Program, Action, Noun, Where string
	// Every is the schedule's period, Margin the window half-width.
	Every, Margin time.Duration
	Runs          []*load.Result
	// Overhead, when set, is the median time to run a trivial command the
	// way Action is run (in the sandbox: nsenter plus systemctl), part of
	// every event's wall time.
	Overhead time.Duration
	// ZeroFailures says the target is no failed request (webapp's rows).
	ZeroFailures bool
	// Notes are facts the run checked, shown under the table.
	Notes []string
}

// Failed returns the failed requests over all runs.
func (d *Disruption) Failed() int64 {
	var n int64
	for _, r := range d.Runs {
		n += r.Failed()
	}
	return n
}

// Events returns the disruptions over all runs.
func (d *Disruption) Events() int {
	n := 0
	for _, r := range d.Runs {
		n += len(r.Events)
	}
	return n
}

// EventErrors returns the disruptions that returned an error.
func (d *Disruption) EventErrors() int {
	n := 0
	for _, r := range d.Runs {
		for _, e := range r.Events {
			if e.Err != nil || e.Error != "" {
				n++
			}
		}
	}
	return n
}

// Stop is scenario 4.
type Stop struct {
	Rounds int
	Cases  []StopCase
}

// StopCase is one server in one situation, SIGTERM'd once per round.
type StopCase struct {
	// Short is Situation in a few words, for the chart.
	Server, Situation, Short string
	// Exit is, per round, the time from SIGTERM to the process's exit.
	Exit []time.Duration
	// Request, for the in-flight situation: its length, how long it had
	// run at SIGTERM, and per round whether it completed with 200 and
	// "Connection: close".
	Request, RanBefore time.Duration
	Completed          []bool
	ConnClose          []bool
	// AfterResponse is, per round, the time from the client's reading the
	// last byte of the response to the server's exit.
	AfterResponse []time.Duration
	// IdleConns is the number of idle keep-alive connections held open.
	IdleConns int
}

// Protocols is scenario 6: webapp with its four sockets under systemd,
// each protocol loaded by a client nobody here wrote (or, for UDP, one
// that counts every datagram), through reloads and then restarts.
type Protocols struct {
	// ReloadEvery and RestartEvery are the schedules' periods; Lead and
	// Tail the load before the first event and after the last.
	ReloadEvery, RestartEvery, Lead, Tail time.Duration
	Scenarios                             []*ProtoScenario
	// Notes are facts the run checked, shown under the tables.
	Notes []string
}

// ProtoScenario is one protocol (or all at once): a run through reloads
// and a run through restarts.
type ProtoScenario struct {
	// Key names it in logs; Title heads its rows.
	Key, Title string
	Runs       []*ProtoRun
}

// ProtoRun is one load run with one series of events.
type ProtoRun struct {
	// Noun names one event ("reload"), Action says what it ran.
	Noun, Action string
	Events       []ProtoEvent
	// Loads has one entry per client that ran.
	Loads []ProtoLoad
	// Started is when the clients started; Elapsed the run's length,
	// from then to their end.
	Started time.Time
	Elapsed time.Duration
	// CPU is webapp.service's CPU time over the run: every generation,
	// the reload commands included (the cgroup of the service's own
	// slice).
	CPU time.Duration
	// MainPIDs is the number of distinct main processes seen after the
	// events, the first included.
	MainPIDs int
}

// ProtoEvent is one reload or restart.
type ProtoEvent struct {
	Start, Duration time.Duration // from the run's start
	Error           string
}

// ProtoLoad is what one client counted over a run.
type ProtoLoad struct {
	// Protocol is what was spoken, Client the client's command, Unit what
	// it counts ("requests", "RPCs", "datagrams").
	Protocol, Client, Unit string
	// Runs is the number of client runs (h2load and ghz are run again and
	// again); Overlapping how many of them overlapped an event; Broken
	// how many ended without a report (killed at their time limit, or a
	// report that did not parse): their requests count as failed.
	Runs, Overlapping, Broken int
	// Requests were sent, OK answered as wanted (2xx; status OK; the
	// datagram echoed). Failed, Errored and Timeout are h2load's own
	// counts.
	Requests, OK, Failed, Errored, Timeout int64
	// Statuses and Errors are ghz's distributions, summed over its runs.
	Statuses, Errors map[string]int64
	// PIDs counts the answers by the pid that gave them (UDP).
	PIDs map[int]int64
	// Late counts datagrams answered more than a second after they were
	// sent; MaxWait is the longest wait for an answer.
	Late    int64
	MaxWait time.Duration
	// Elapsed is the client's time under load.
	Elapsed time.Duration
	// FirstBad are the first requests not answered (at most
	// maxFailureRows): when each was sent and what the client said.
	FirstBad []BadRequest
}

// BadRequest is a request not answered as wanted. For h2load, which does
// not time its requests, At is the start of the run they were part of.
type BadRequest struct {
	At    time.Time
	Error string
}

// Bad is the number of requests that were not answered as wanted.
func (l ProtoLoad) Bad() int64 { return l.Requests - l.OK }

// RPS is the client's throughput.
func (l ProtoLoad) RPS() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(l.Requests) / l.Elapsed.Seconds()
}

// Bad returns the requests not answered as wanted over every client of
// the run, and whether an event failed.
func (r *ProtoRun) Bad() (requests int64, events int) {
	for _, l := range r.Loads {
		requests += l.Bad()
	}
	for _, e := range r.Events {
		if e.Error != "" {
			events++
		}
	}
	return requests, events
}

// Drain is scenario 7: how long webapp's drain takes with many HTTP/2
// connections and gRPC streams open, and what it cut.
type Drain struct {
	Rounds int
	// DrainTimeout and IdleGrace are webapp's settings in the runs.
	DrainTimeout, IdleGrace time.Duration
	Cases                   []DrainCase
}

// DrainCase is one situation, SIGTERM'd once per round.
type DrainCase struct {
	Situation string
	// H2Conns is the number of HTTP/2 (h2c) connections open, Streams
	// the number of webapp.v1.Ticker/Ticks streams.
	H2Conns, Streams int
	// Busy says whether the HTTP/2 clients kept sending during the drain.
	Busy bool
	// Exit is, per round, SIGTERM to the process's exit; Took what
	// webapp's log said the drain took.
	Exit, Took []time.Duration
	// Cut is, per round, the connections webapp cut at the deadline, with
	// the log line of the last round.
	Cut  []int
	Line string
	// Unavailable counts the streams that ended with UNAVAILABLE and
	// webapp's "draining, retry"; StreamEnds the other ends, by status.
	Unavailable int
	StreamEnds  map[string]int
	// DuringDrain counts the HTTP/2 requests answered after SIGTERM (busy
	// case), and AfterGoaway the requests refused once every connection
	// had its GOAWAY (no next generation: the benchmark's own listener
	// is closed), by error.
	DuringDrain int64
	AfterGoaway map[string]int
}

// LongLived is scenario 9: WebSocket and server-sent-event clients
// through reloads and restarts under systemd, with webapp's drain signal
// and without it.
type LongLived struct {
	// Interval is the time between two messages of a WebSocket client.
	Interval time.Duration
	Cases    []LongLivedCase
}

// LongLivedCase is one run of the clients.
type LongLivedCase struct {
	Title string
	// Signal says whether webapp's handlers watch the drain signal;
	// DropIn is webapp.service's drop-in.
	Signal bool
	DropIn string
	// WS and SSE are the clients, Reloads and Restarts the events,
	// EventErrors those that failed.
	WS, SSE, Reloads, Restarts, EventErrors int
	Totals                                  livetest.Totals
	// Reconnects are, sorted, for each reload and WebSocket client, from
	// the reload's return to the client's first connection to the new
	// generation; Never counts the pairs with none.
	Reconnects []time.Duration
	Never      int
	// OldExit are, sorted, from each reload's return to the old
	// generation's exit; ReloadTook the reloads' wall times.
	OldExit, ReloadTook []time.Duration
	// CutLines counts the drains whose log says they cut connections.
	CutLines int
}

// Clean reports whether the case met the targets: no abnormal closure,
// no message lost, no id missing or repeated, every client on every new
// generation, no failed event.
func (c LongLivedCase) Clean() bool {
	t := c.Totals
	return t.Abnormal == 0 && t.Lost == 0 && t.Dup == 0 && t.ConnectErrors == 0 && t.Missing == 0 && t.Repeated == 0 &&
		t.SSEErrors == 0 && c.Never == 0 && c.EventErrors == 0 && t.WS == c.WS && t.SSE == c.SSE
}
