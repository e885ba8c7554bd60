package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// What the benchmark reads from the programs it runs and from the
// kernel: h2load's summary, ghz's JSON, webapp's UDP answers and last log
// line, /proc/PID/stat and a cgroup's cpu.stat.

// H2loadSummary is what one h2load run printed.
type H2loadSummary struct {
	// Protocol is the application protocol h2load spoke ("h2c", "h2").
	Protocol string
	// The "requests:" line.
	Total, Started, Done, Succeeded, Failed, Errored, Timeout int64
	// Status2xx is the 2xx count of the "status codes:" line.
	Status2xx int64
	// Took is the "finished in" time.
	Took time.Duration
}

var (
	h2loadRequests = regexp.MustCompile(`(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2loadStatus   = regexp.MustCompile(`(?m)^status codes: (\d+) 2xx`)
	h2loadFinished = regexp.MustCompile(`(?m)^finished in ([0-9.]+)(us|ms|s),`)
	h2loadProto    = regexp.MustCompile(`(?m)^Application protocol: (\S+)`)
)

// ParseH2load reads h2load's output. A run that printed no "requests:"
// line (it was killed, or could not start) is an error.
func ParseH2load(out []byte) (H2loadSummary, error) {
	var s H2loadSummary
	m := h2loadRequests.FindSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("h2load: no \"requests:\" line in its output: %s", oneLine(lastLines(string(out), 3)))
	}
	for i, p := range []*int64{&s.Total, &s.Started, &s.Done, &s.Succeeded, &s.Failed, &s.Errored, &s.Timeout} {
		*p, _ = strconv.ParseInt(string(m[i+1]), 10, 64)
	}
	if m := h2loadStatus.FindSubmatch(out); m != nil {
		s.Status2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := h2loadFinished.FindSubmatch(out); m != nil {
		f, _ := strconv.ParseFloat(string(m[1]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[2])]
		s.Took = time.Duration(f * float64(unit))
	}
	if m := h2loadProto.FindSubmatch(out); m != nil {
		s.Protocol = string(m[1])
	}
	return s, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// GhzSummary is the part of ghz's JSON report (-O json) the benchmark
// uses. ghz exits 0 even when calls fail: these counts are the outcome.
type GhzSummary struct {
	Count    int64            `json:"count"`
	RPS      float64          `json:"rps"`
	Statuses map[string]int64 `json:"statusCodeDistribution"`
	Errors   map[string]int64 `json:"errorDistribution"`
	// EndReason is "normal", "timeout" (the -z duration ran out) or
	// "cancel".
	EndReason string `json:"endReason"`
	// Total is the run's duration, in nanoseconds.
	Total int64 `json:"total"`
	// Details has one entry per call.
	Details []GhzCall `json:"details"`
}

// GhzCall is one call of ghz's report.
type GhzCall struct {
	Timestamp time.Time `json:"timestamp"`
	Status    string    `json:"status"`
	Error     string    `json:"error"`
}

// ParseGhz reads ghz's JSON report.
func ParseGhz(out []byte) (GhzSummary, error) {
	var s GhzSummary
	if err := json.Unmarshal(out, &s); err != nil {
		return s, fmt.Errorf("ghz: its JSON report: %w: %s", err, oneLine(string(out[:min(len(out), 200)])))
	}
	if s.Statuses == nil && s.Count > 0 {
		return s, errors.New("ghz: the JSON report has no statusCodeDistribution")
	}
	return s, nil
}

// OK is the number of calls that ended with status OK.
func (s GhzSummary) OK() int64 { return s.Statuses["OK"] }

// ParseUDPAnswer reads webapp's answer to a datagram, "<pid> <the same
// bytes>", and checks that it echoes sent.
func ParseUDPAnswer(answer, sent []byte) (pid int, err error) {
	p, rest, ok := bytes.Cut(answer, []byte(" "))
	if !ok {
		return 0, fmt.Errorf("udp answer %q: want \"<pid> <bytes>\"", answer)
	}
	pid, err = strconv.Atoi(string(p))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("udp answer %q: %q is not a pid", answer, p)
	}
	if !bytes.Equal(rest, sent) {
		return pid, fmt.Errorf("udp answer %q: does not echo %q", answer, sent)
	}
	return pid, nil
}

// DrainOutcome is what webapp's last log line of a drain says.
type DrainOutcome struct {
	Took time.Duration
	// Cut is the number of connections cut at the deadline, By how many
	// of them per socket ("http 3, grpc 1").
	Cut int
	By  string
	// Line is the log message.
	Line string
}

var (
	drainClean = regexp.MustCompile(`stopped after ([0-9.a-zµ]+), no connection cut`)
	drainCut   = regexp.MustCompile(`stopped after ([0-9.a-zµ]+): (\d+) connections cut at the deadline \(([^)]*)\)`)
)

// ParseDrainLog finds the last drain outcome in webapp's log.
func ParseDrainLog(log string) (DrainOutcome, error) {
	var o DrainOutcome
	found := false
	for l := range strings.Lines(log) {
		if m := drainClean.FindStringSubmatch(l); m != nil {
			d, err := time.ParseDuration(m[1])
			if err != nil {
				continue
			}
			o, found = DrainOutcome{Took: d, Line: m[0]}, true
		} else if m := drainCut.FindStringSubmatch(l); m != nil {
			d, err := time.ParseDuration(m[1])
			if err != nil {
				continue
			}
			n, _ := strconv.Atoi(m[2])
			o, found = DrainOutcome{Took: d, Cut: n, By: m[3], Line: m[0]}, true
		}
	}
	if !found {
		return o, errors.New("no \"stopped after\" line in webapp's log")
	}
	return o, nil
}

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// ProcCPU returns the CPU time, user and system, that process pid and all
// its threads have used so far.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return ParseProcStatCPU(b)
}

// ParseProcStatCPU reads utime + stime from the contents of /proc/PID/stat.
func ParseProcStatCPU(b []byte) (time.Duration, error) {
	// pid (comm) state ppid ...: comm may hold spaces and parentheses;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no \")\" after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields after the command name, want at least 13", len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/PID/stat: %w", err)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// ParseCPUStat reads usage_usec from the contents of a cgroup v2 cpu.stat
// file: the CPU time of every process that ever ran in the cgroup or
// below it.
func ParseCPUStat(b []byte) (time.Duration, error) {
	for l := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(l), " ")
		if ok && k == "usage_usec" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu.stat usage_usec %q: %w", v, err)
			}
			return time.Duration(n) * time.Microsecond, nil
		}
	}
	return 0, errors.New("cpu.stat: no usage_usec line")
}

// WrkSummary is what one wrk run printed.
type WrkSummary struct {
	// Requests is the "N requests in T" count: responses read to their
	// end.
	Requests int64
	Took     time.Duration
	// The "Socket errors:" line (absent when all are zero).
	Connect, Read, Write, Timeout int64
	// Non2xx is the "Non-2xx or 3xx responses:" count.
	Non2xx int64
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),`)
	wrkSocket   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
)

// ParseWrk reads wrk's report. Output without the "requests in" line
// (wrk was killed, or could not start) is an error.
func ParseWrk(out []byte) (WrkSummary, error) {
	var s WrkSummary
	m := wrkRequests.FindSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("wrk: no \"requests in\" line in its output: %s", oneLine(lastLines(string(out), 3)))
	}
	s.Requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	f, _ := strconv.ParseFloat(string(m[2]), 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[string(m[3])]
	s.Took = time.Duration(math.Round(f * float64(unit)))
	if m := wrkSocket.FindSubmatch(out); m != nil {
		for i, p := range []*int64{&s.Connect, &s.Read, &s.Write, &s.Timeout} {
			*p, _ = strconv.ParseInt(string(m[i+1]), 10, 64)
		}
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		s.Non2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	return s, nil
}

// Errors is what wrk counts as failed: its socket errors (connect, read,
// write, timeout) and the responses that were not 2xx or 3xx.
func (s WrkSummary) Errors() int64 { return s.Connect + s.Read + s.Write + s.Timeout + s.Non2xx }

// Add sums two runs' counts (wrk processes run side by side); Took is the
// longer.
func (s WrkSummary) Add(o WrkSummary) WrkSummary {
	return WrkSummary{Requests: s.Requests + o.Requests, Took: max(s.Took, o.Took),
		Connect: s.Connect + o.Connect, Read: s.Read + o.Read, Write: s.Write + o.Write, Timeout: s.Timeout + o.Timeout, Non2xx: s.Non2xx + o.Non2xx}
}

// ParseVmRSS reads VmRSS, in bytes, from the contents of
// /proc/PID/status.
func ParseVmRSS(b []byte) (int64, error) {
	for l := range strings.Lines(string(b)) {
		v, ok := strings.CutPrefix(l, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc/PID/status: VmRSS line %q", strings.TrimSpace(l))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/PID/status: VmRSS: %w", err)
		}
		return n << 10, nil
	}
	return 0, errors.New("/proc/PID/status: no VmRSS line")
}

// ParseTCPActiveOpens reads the Tcp ActiveOpens counter (connect() calls
// that sent a SYN, in the network namespace) from the contents of
// /proc/net/snmp.
func ParseTCPActiveOpens(b []byte) (int64, error) {
	var names []string
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, n := range names {
			if n == "ActiveOpens" && i+1 < len(f) {
				return strconv.ParseInt(f[i+1], 10, 64)
			}
		}
		break
	}
	return 0, errors.New("/proc/net/snmp: no Tcp ActiveOpens")
}

// ParseListenOverflows reads the TcpExt ListenOverflows counter (a
// connection that completed its handshake while the listening socket's
// accept queue was full: the kernel dropped it, and the client's
// retransmission, a second or more later, tries again) from the
// contents of /proc/net/netstat.
func ParseListenOverflows(b []byte) (int64, error) {
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) || values[0] != "TcpExt:" {
			continue
		}
		for j, n := range names {
			if n == "ListenOverflows" {
				return strconv.ParseInt(values[j], 10, 64)
			}
		}
	}
	return 0, errors.New("/proc/net/netstat: no TcpExt ListenOverflows")
}

// AcceptBacklog reads, from the contents of /proc/net/tcp, the accept
// queue of the listening socket on port (its rx_queue: connections whose
// handshake is done and that the server has not accepted yet) and how
// many handshakes to that port are pending (SYN_RECV), and whether such
// a listener was found.
func AcceptBacklog(b []byte, port int) (queued, pending int, found bool) {
	suffix := fmt.Sprintf(":%04X", port)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		switch f[3] {
		case "0A": // LISTEN
			_, rx, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseInt(rx, 16, 64)
			if err == nil {
				queued += int(n)
				found = true
			}
		case "03": // SYN_RECV
			pending++
		}
	}
	return queued, pending, found
}

// DrainEvent is one of webapp's drain-started or drain-finished journal
// entries (native fields BATON_*, `journalctl -o json`).
type DrainEvent struct {
	Event string
	At    time.Time
	PID   int
	// Stopping says it was a stop's drain, not the old generation's after
	// a reload.
	Stopping bool
	// Duration (drain-finished) is how long the drain took; Cut what it
	// cut at the deadline; Connections (drain-started) the connections
	// open when it began.
	Duration         time.Duration
	Cut, Connections int
}

// ParseDrainEvents reads `journalctl -o json` output, one entry a line,
// and returns the drain events among them in order.
func ParseDrainEvents(out []byte) ([]DrainEvent, error) {
	var evs []DrainEvent
	for l := range strings.Lines(string(out)) {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			return evs, fmt.Errorf("journal entry: %w: %s", err, oneLine(l))
		}
		str := func(k string) string { s, _ := e[k].(string); return s }
		num := func(k string) int64 { n, _ := strconv.ParseInt(str(k), 10, 64); return n }
		kind := str("BATON_EVENT")
		if kind != "drain-started" && kind != "drain-finished" {
			continue
		}
		evs = append(evs, DrainEvent{
			Event:       kind,
			At:          time.UnixMicro(num("__REALTIME_TIMESTAMP")),
			PID:         int(num("BATON_PID")),
			Stopping:    str("BATON_STOPPING") == "true",
			Duration:    time.Duration(num("BATON_DURATION_USEC")) * time.Microsecond,
			Cut:         int(num("BATON_CUT")),
			Connections: int(num("BATON_CONNECTIONS")),
		})
	}
	return evs, nil
}
