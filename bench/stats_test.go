package bench

import (
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

func TestSpreadOf(t *testing.T) {
	tests := []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3}, Spread{N: 1, Median: 3, Q1: 3, Q3: 3, Min: 3, Max: 3}},
		{[]float64{4, 1, 3}, Spread{N: 3, Median: 3, Q1: 2, Q3: 3.5, Min: 1, Max: 4}},
		{[]float64{4, 1, 3, 2}, Spread{N: 4, Median: 2.5, Q1: 1.75, Q3: 3.25, Min: 1, Max: 4}},
		{[]float64{5, 1, 2, 3, 4}, Spread{N: 5, Median: 3, Q1: 2, Q3: 4, Min: 1, Max: 5}},
	}
	for _, tt := range tests {
		if got := SpreadOf(tt.in); got != tt.want {
			t.Errorf("SpreadOf(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestAround(t *testing.T) {
	ms := time.Millisecond
	res := &load.Result{
		Events: []load.Event{
			{Window: load.Window{From: 100 * ms, To: 200 * ms}},
			{Window: load.Window{From: 150 * ms, To: 400 * ms}}, // overlaps the first
			{Window: load.Window{From: 800 * ms, To: 900 * ms}},
		},
	}
	for i, start := range []time.Duration{0, 100, 180, 300, 500, 850, 950} {
		s := load.Sample{Start: start * ms, Latency: time.Duration(i+1) * ms}
		if start == 300 {
			s.Class = load.ClassReset
		}
		res.Samples = append(res.Samples, s)
	}
	got := Around(res)
	// In windows: 100 (2 ms), 180 (3 ms), 300 (failed), 850 (6 ms).
	want := load.Stats{Requests: 4, Failed: 1, P50: 3 * ms, P90: 6 * ms, P99: 6 * ms, Max: 6 * ms}
	if got != want {
		t.Errorf("Around = %+v, want %+v", got, want)
	}
}

func TestFmtDur(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0"},
		{420 * time.Microsecond, "420 µs"},
		{1234 * time.Microsecond, "1.23 ms"},
		{20 * time.Millisecond, "20 ms"},
		{123456 * time.Microsecond, "123.5 ms"},
		{time.Second, "1 s"},
		{2500 * time.Millisecond, "2.5 s"},
		{1234 * time.Millisecond, "1.23 s"},
	}
	for _, tt := range tests {
		if got := fmtDur(tt.in); got != tt.want {
			t.Errorf("fmtDur(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReloadThroughput(t *testing.T) {
	ms := time.Millisecond
	// One response completing every 10 ms from 0 to 10 s, except at
	// half the rate from 4 s to 6 s; one failure (not counted) in the
	// window.
	var samples []load.Sample
	for at := time.Duration(0); at < 10*time.Second; at += 10 * ms {
		if at >= 4*time.Second && at < 6*time.Second && at%(20*ms) != 0 {
			continue
		}
		samples = append(samples, load.Sample{Start: at - 5*ms, Latency: 5 * ms})
	}
	samples = append(samples, load.Sample{Start: 5 * time.Second, Latency: ms, Class: load.ClassReset})
	events := []load.Event{
		{Start: 4500 * ms, Duration: 200 * ms, Window: load.Window{From: 4 * time.Second, To: 5 * time.Second}},
		{Start: 5500 * ms, Duration: 200 * ms, Window: load.Window{From: 5 * time.Second, To: 6 * time.Second}},
	}
	got := ReloadThroughput(samples, events, time.Second, 9*time.Second)
	if got.WindowSpan != 2*time.Second || got.SteadySpan != 6*time.Second {
		t.Errorf("ReloadThroughput spans = %v window, %v steady; want 2s, 6s", got.WindowSpan, got.SteadySpan)
	}
	near := func(x, want float64) bool { return x > want*0.98 && x < want*1.02 }
	if !near(got.Steady, 100) || !near(got.Pooled, 50) || len(got.Windows) != 2 || !near(got.Windows[0], 50) || !near(got.Windows[1], 50) {
		t.Errorf("ReloadThroughput = steady %.1f/s, pooled %.1f/s, windows %v; want 100, 50, [50 50]", got.Steady, got.Pooled, got.Windows)
	}
	if r := got.Ratio(); !near(r, 0.5) {
		t.Errorf("Ratio() = %.3f, want 0.5", r)
	}
	if z := ReloadThroughput(samples, events, 3*time.Second, 3*time.Second); z.Steady != 0 || z.Ratio() != 0 {
		t.Errorf("ReloadThroughput(empty span) = %+v, want zero", z)
	}
}
