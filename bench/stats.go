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
