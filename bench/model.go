package bench

import (
	"time"

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
}

// SteadyMode is one connection mode of scenario 1; the slices have one
// entry per round, each server's two runs of the round taken together.
type SteadyMode struct {
	Mode          load.Mode
	Webapp, Plain []RunStats
	// WebappFirst says, per round, which server was loaded first.
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
