package load

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what a Run measured. It encodes to JSON with encoding/json;
// durations are integer nanoseconds in fields whose names end in _ns.
type Result struct {
	URL      string        `json:"url"`
	Mode     Mode          `json:"mode"`
	Clients  int           `json:"clients"`
	Timeout  time.Duration `json:"timeout_ns"`
	Started  time.Time     `json:"started"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Requests int64         `json:"requests"` // requests that came to an outcome
	OK       int64         `json:"ok"`
	// Failures counts the failed requests by class.
	Failures FailureCounts `json:"failures"`
	// Aborted counts requests cut short by the caller's cancellation;
	// they are neither OK nor failures.
	Aborted int64 `json:"aborted"`
	// Dials counts connections opened (attempted).
	Dials int64 `json:"dials"`
	// RPS is Requests divided by Elapsed.
	RPS float64 `json:"rps"`

	// Latency covers all kept samples, Steady those outside every
	// disruption window.
	Latency Stats `json:"latency"`
	Steady  Stats `json:"steady"`
	// Events are the disruptions that ran, in order.
	Events []Event `json:"events,omitempty"`

	// PIDs and Versions count responses by the value of PIDHeader and
	// VersionHeader; responses without the header are not counted.
	PIDs     map[string]int64 `json:"pids"`
	Versions map[string]int64 `json:"versions"`

	// FailureDetails are the first failures recorded, at most
	// Options.MaxFailureDetails, sorted by Offset.
	FailureDetails []Failure `json:"failure_details,omitempty"`

	// Samples are the kept per-request samples sorted by start;
	// SamplesDropped counts requests beyond Options.MaxSamples.
	Samples        []Sample `json:"-"`
	SamplesDropped int64    `json:"samples_dropped"`
}

// FailureCounts counts failed requests by class.
type FailureCounts struct {
	Refused   int64 `json:"refused"`
	Reset     int64 `json:"reset"`
	EOF       int64 `json:"eof"`
	Timeout   int64 `json:"timeout"`
	Status    int64 `json:"status"`
	Truncated int64 `json:"truncated"`
	Other     int64 `json:"other"`
}

// Total returns the number of failed requests.
func (f FailureCounts) Total() int64 {
	return f.Refused + f.Reset + f.EOF + f.Timeout + f.Status + f.Truncated + f.Other
}

// Of returns the count of class c (0 for ClassOK).
func (f FailureCounts) Of(c Class) int64 {
	if p := f.field(c); p != nil {
		return *p
	}
	return 0
}

// field is the counter of class c, nil for ClassOK or an unknown class.
func (f *FailureCounts) field(c Class) *int64 {
	switch c {
	case ClassRefused:
		return &f.Refused
	case ClassReset:
		return &f.Reset
	case ClassEOF:
		return &f.EOF
	case ClassTimeout:
		return &f.Timeout
	case ClassStatus:
		return &f.Status
	case ClassTruncated:
		return &f.Truncated
	case ClassOther:
		return &f.Other
	}
	return nil
}

func (f *FailureCounts) add(c Class, n int64) {
	if p := f.field(c); p != nil {
		*p += n
	}
}

// Failed returns the number of failed requests.
func (r *Result) Failed() int64 { return r.Failures.Total() }

// Stats summarise a set of requests. Percentiles are nearest-rank over the
// successful ones; they are zero when there is none.
type Stats struct {
	Requests int64         `json:"requests"`
	Failed   int64         `json:"failed"`
	P50      time.Duration `json:"p50_ns"`
	P90      time.Duration `json:"p90_ns"`
	P99      time.Duration `json:"p99_ns"`
	Max      time.Duration `json:"max_ns"`
}

// Event is one disruption of a Schedule.
type Event struct {
	Index    int           `json:"index"`
	Start    time.Duration `json:"start_ns"` // offset from the start of the load
	Duration time.Duration `json:"duration_ns"`
	// Err is what Schedule.Run returned; Error is its text.
	Err    error  `json:"-"`
	Error  string `json:"error,omitempty"`
	Window Window `json:"window"`
}

// End returns the offset at which the event returned.
func (e Event) End() time.Duration { return e.Start + e.Duration }

// Window is the requests that started within [From, To], the event's
// span widened by Options.Margin on both sides.
type Window struct {
	From time.Duration `json:"from_ns"`
	To   time.Duration `json:"to_ns"`
	Stats
	// WorstAdded is Max minus the steady p50 (the overall p50 when no
	// request was steady), at least zero.
	WorstAdded time.Duration `json:"worst_added_ns"`
}

// Failure describes one failed request.
type Failure struct {
	Offset  time.Duration `json:"offset_ns"` // start, from the start of the load
	Latency time.Duration `json:"latency_ns"`
	Class   Class         `json:"class"`
	Error   string        `json:"error"`
	// Written says whether the whole request had been written.
	Written bool `json:"written"`
	// ConnRequest is the request's 1-based number on its connection; 0
	// when no connection was established.
	ConnRequest int `json:"conn_request"`
	Client      int `json:"client"`
	Status      int `json:"status,omitempty"`
}

// Sample is one request.
type Sample struct {
	Start   time.Duration `json:"start_ns"` // from the start of the load
	Latency time.Duration `json:"latency_ns"`
	PID     int32         `json:"pid,omitempty"` // PIDHeader as a number, 0 if absent
	Class   Class         `json:"class"`
}

func (r *runner) result(elapsed time.Duration) *Result {
	res := &Result{
		URL:            r.target,
		Mode:           r.opts.Mode,
		Clients:        r.opts.Clients,
		Timeout:        r.opts.Timeout,
		Started:        r.t0,
		Elapsed:        elapsed,
		PIDs:           make(map[string]int64),
		Versions:       make(map[string]int64),
		Events:         r.events,
		FailureDetails: r.failures,
	}
	n := 0
	for _, w := range r.workers {
		n += len(w.samples)
	}
	res.Samples = make([]Sample, 0, n)
	for _, w := range r.workers {
		res.OK += w.counts[ClassOK]
		for c := ClassRefused; c < numClasses; c++ {
			res.Failures.add(c, w.counts[c])
		}
		res.Aborted += w.aborted
		res.Dials += w.dials
		res.SamplesDropped += w.dropped
		res.Samples = append(res.Samples, w.samples...)
		for k, v := range w.pids {
			res.PIDs[k] += v
		}
		for k, v := range w.versions {
			res.Versions[k] += v
		}
	}
	res.Requests = res.OK + res.Failed()
	if elapsed > 0 {
		res.RPS = float64(res.Requests) / elapsed.Seconds()
	}
	slices.SortFunc(res.Samples, func(a, b Sample) int { return cmp.Compare(a.Start, b.Start) })
	slices.SortStableFunc(res.FailureDetails, func(a, b Failure) int { return cmp.Compare(a.Offset, b.Offset) })
	computeStats(res, r.opts.Margin)
	return res
}

// computeStats fills the latency statistics and event windows from the
// sorted samples.
func computeStats(res *Result, margin time.Duration) {
	s := res.Samples
	lat := make([]time.Duration, 0, len(s))
	res.Latency = stats(s, lat)

	var spans [][2]time.Duration // merged windows
	for i := range res.Events {
		ev := &res.Events[i]
		ev.Window.From = ev.Start - margin
		ev.Window.To = ev.End() + margin
		if k := len(spans) - 1; k >= 0 && ev.Window.From <= spans[k][1] {
			spans[k][1] = max(spans[k][1], ev.Window.To)
		} else {
			spans = append(spans, [2]time.Duration{ev.Window.From, ev.Window.To})
		}
	}
	steady := s
	if len(spans) > 0 {
		steady = make([]Sample, 0, len(s))
		k := 0
		for _, x := range s {
			for k < len(spans) && x.Start > spans[k][1] {
				k++
			}
			if k < len(spans) && x.Start >= spans[k][0] {
				continue
			}
			steady = append(steady, x)
		}
	}
	res.Steady = stats(steady, lat)
	base := res.Steady.P50
	if res.Steady.Requests-res.Steady.Failed == 0 {
		base = res.Latency.P50
	}
	for i := range res.Events {
		w := &res.Events[i].Window
		lo, _ := slices.BinarySearchFunc(s, w.From, func(x Sample, t time.Duration) int { return cmp.Compare(x.Start, t) })
		hi, _ := slices.BinarySearchFunc(s, w.To+1, func(x Sample, t time.Duration) int { return cmp.Compare(x.Start, t) })
		w.Stats = stats(s[lo:hi], lat)
		w.WorstAdded = max(w.Max-base, 0)
	}
}

// StatsOf summarises samples as the generator does for its own windows:
// requests, failures, and nearest-rank percentiles over the successful
// ones.
func StatsOf(samples []Sample) Stats { return stats(samples, nil) }

// Percentile returns the nearest-rank p-th percentile of sorted, the
// definition the generator's Stats use.
func Percentile(sorted []time.Duration, p int) time.Duration { return percentile(sorted, p) }

// stats summarises samples, using buf as scratch space.
func stats(samples []Sample, buf []time.Duration) Stats {
	st := Stats{Requests: int64(len(samples))}
	buf = buf[:0]
	for _, x := range samples {
		if x.Class == ClassOK {
			buf = append(buf, x.Latency)
		} else {
			st.Failed++
		}
	}
	if len(buf) == 0 {
		return st
	}
	slices.Sort(buf)
	st.P50 = percentile(buf, 50)
	st.P90 = percentile(buf, 90)
	st.P99 = percentile(buf, 99)
	st.Max = buf[len(buf)-1]
	return st
}

// percentile returns the nearest-rank p-th percentile of sorted.
func percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	rank := (p*n + 99) / 100 // ceil(p/100 * n)
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// maxShownFailures caps the failure details that String shows.
const maxShownFailures = 10

// String returns a human-readable summary as a few aligned tables.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %d clients  %s\n", r.URL, r.Mode, r.Clients, round(r.Elapsed))
	fmt.Fprintf(&b, "requests %d (%.0f/s), ok %d, failed %d", r.Requests, r.RPS, r.OK, r.Failed())
	if r.Aborted > 0 {
		fmt.Fprintf(&b, ", aborted %d", r.Aborted)
	}
	fmt.Fprintf(&b, ", dials %d\n", r.Dials)
	if r.Failed() > 0 {
		b.WriteString("failures:")
		for c := ClassRefused; c < numClasses; c++ {
			if n := r.Failures.Of(c); n > 0 {
				fmt.Fprintf(&b, " %s %d", c, n)
			}
		}
		b.WriteByte('\n')
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\tok\tp50\tp90\tp99\tmax\t\n")
	statsRow(tw, "latency", r.Latency)
	if len(r.Events) > 0 {
		statsRow(tw, "steady", r.Steady)
	}
	tw.Flush()
	if r.SamplesDropped > 0 {
		fmt.Fprintf(&b, "latency over the first samples only: %d not kept\n", r.SamplesDropped)
	}
	countsLine(&b, "pids", r.PIDs)
	countsLine(&b, "versions", r.Versions)
	if len(r.Events) > 0 {
		fmt.Fprintln(&b, "events (window: started within event ± margin; worst+ = window max − steady p50)")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "#\tstart\ttook\trequests\tfailed\tp99\tmax\tworst+\t  error\n")
		for _, e := range r.Events {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t  %s\n", e.Index, round(e.Start), round(e.Duration),
				e.Window.Requests, e.Window.Failed, round(e.Window.P99), round(e.Window.Max), round(e.Window.WorstAdded), e.Error)
		}
		tw.Flush()
	}
	if len(r.FailureDetails) > 0 {
		shown := r.FailureDetails[:min(len(r.FailureDetails), maxShownFailures)]
		fmt.Fprintf(&b, "first %d failures", len(shown))
		if len(shown) < len(r.FailureDetails) {
			fmt.Fprintf(&b, " (%d kept in the JSON summary)", len(r.FailureDetails))
		}
		b.WriteByte('\n')
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "  at\tclass\tclient\tconn req\twritten\ttook\terror\n")
		for _, f := range shown {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%t\t%s\t%s\n", round(f.Offset), f.Class, f.Client, f.ConnRequest, f.Written, round(f.Latency), f.Error)
		}
		tw.Flush()
	}
	return b.String()
}

func statsRow(w io.Writer, name string, s Stats) {
	fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t\n", name, s.Requests-s.Failed, round(s.P50), round(s.P90), round(s.P99), round(s.Max))
}

func countsLine(b *strings.Builder, name string, m map[string]int64) {
	if len(m) == 0 {
		return
	}
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	fmt.Fprintf(b, "%s (%d):", name, len(keys))
	for i, k := range keys {
		if i == 20 {
			fmt.Fprintf(b, " … %d more", len(keys)-i)
			break
		}
		fmt.Fprintf(b, " %s×%d", k, m[k])
	}
	b.WriteByte('\n')
}

// round shortens d for display.
func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// WriteSamples writes the samples as CSV with a header line:
// start_s,latency_ms,class,pid.
func (r *Result) WriteSamples(w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("start_s,latency_ms,class,pid\n")
	var line []byte
	for _, s := range r.Samples {
		line = strconv.AppendFloat(line[:0], s.Start.Seconds(), 'f', 6, 64)
		line = append(line, ',')
		line = strconv.AppendFloat(line, float64(s.Latency)/float64(time.Millisecond), 'f', 3, 64)
		line = append(line, ',')
		line = append(line, s.Class.String()...)
		line = append(line, ',')
		line = strconv.AppendInt(line, int64(s.PID), 10)
		line = append(line, '\n')
		bw.Write(line)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("load: writing samples: %w", err)
	}
	return nil
}
