package bench

import (
	"cmp"
	"slices"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// Spread is the median of some values with their quartiles, smallest and
// largest.
type Spread struct {
	N                        int
	Median, Q1, Q3, Min, Max float64
}

// SpreadOf returns the spread of xs (zero for none). The median of an even
// count is the mean of the two middle values.
func SpreadOf(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Spread{N: n, Median: med, Q1: quantile(s, 0.25), Q3: quantile(s, 0.75), Min: s[0], Max: s[n-1]}
}

// quantile interpolates the q-quantile of sorted linearly between the
// closest ranks.
func quantile(sorted []float64, q float64) float64 {
	h := q * float64(len(sorted)-1)
	i := int(h)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (h-float64(i))*(sorted[i+1]-sorted[i])
}

// DurationSpread returns the spread of ds, in nanoseconds.
func DurationSpread(ds []time.Duration) Spread {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return SpreadOf(xs)
}

// Around returns the statistics of the requests of res that started within
// any event's window (event ± margin), pooled: "latency around a
// disruption".
func Around(res *load.Result) load.Stats {
	var in []load.Sample
	for _, x := range res.Samples {
		if inWindow(res.Events, x.Start) {
			in = append(in, x)
		}
	}
	return load.StatsOf(in)
}

// inWindow reports whether t is within the window of one of evs. Events
// never overlap, so both ends of their windows increase with the index:
// only the first window that ends at or after t can hold t.
func inWindow(evs []load.Event, t time.Duration) bool {
	i, _ := slices.BinarySearchFunc(evs, t, func(e load.Event, t time.Duration) int {
		return cmp.Compare(e.Window.To, t)
	})
	return i < len(evs) && evs[i].Window.From <= t
}

// Throughput is the rate of successful responses, counted by the moment
// each completed (its start plus its latency), inside and outside a
// run's disruption windows.
type Throughput struct {
	// Steady is the rate outside every window, between the From and To
	// given to ReloadThroughput; Pooled the rate inside the union of the
	// windows (clipped to the same span); Windows the rate in each
	// event's own window.
	Steady, Pooled float64
	Windows        []float64
	// SteadySpan and WindowSpan are the lengths the rates are over.
	SteadySpan, WindowSpan time.Duration
}

// Ratio is Pooled over Steady (0 without a steady span).
func (t Throughput) Ratio() float64 {
	if t.Steady <= 0 {
		return 0
	}
	return t.Pooled / t.Steady
}

// WorstRatio is the lowest window's rate over Steady (0 without one).
func (t Throughput) WorstRatio() float64 {
	if t.Steady <= 0 || len(t.Windows) == 0 {
		return 0
	}
	return slices.Min(t.Windows) / t.Steady
}

// ReloadThroughput measures the throughput of a run from its samples:
// each event's window is its Window (the event widened by the run's
// margin on both sides), and the steady span is [from, to] outside every
// window: from is where the load was in full swing (every client
// connected), to where it stopped starting requests.
func ReloadThroughput(samples []load.Sample, events []load.Event, from, to time.Duration) Throughput {
	var t Throughput
	if to <= from {
		return t
	}
	clip := func(a, b time.Duration) (time.Duration, time.Duration) { return max(a, from), min(b, to) }
	// The union of the windows, clipped to [from, to]: events never
	// overlap, so their windows come in order of both ends.
	var union [][2]time.Duration
	for _, e := range events {
		a, b := clip(e.Window.From, e.Window.To)
		if b <= a {
			continue
		}
		if k := len(union) - 1; k >= 0 && a <= union[k][1] {
			union[k][1] = max(union[k][1], b)
		} else {
			union = append(union, [2]time.Duration{a, b})
		}
	}
	for _, u := range union {
		t.WindowSpan += u[1] - u[0]
	}
	t.SteadySpan = to - from - t.WindowSpan
	done := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		if s.Class == load.ClassOK {
			done = append(done, s.Start+s.Latency)
		}
	}
	slices.Sort(done)
	// in counts the completions within [a, b).
	in := func(a, b time.Duration) int {
		lo, _ := slices.BinarySearch(done, a)
		hi, _ := slices.BinarySearch(done, b)
		return hi - lo
	}
	var inside int
	for _, u := range union {
		inside += in(u[0], u[1])
	}
	if t.WindowSpan > 0 {
		t.Pooled = float64(inside) / t.WindowSpan.Seconds()
	}
	if t.SteadySpan > 0 {
		t.Steady = float64(in(from, to)-inside) / t.SteadySpan.Seconds()
	}
	for _, e := range events {
		a, b := clip(e.Window.From, e.Window.To)
		if b > a {
			t.Windows = append(t.Windows, float64(in(a, b))/(b-a).Seconds())
		}
	}
	return t
}
