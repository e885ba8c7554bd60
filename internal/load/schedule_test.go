package load

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	var slow atomic.Bool
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			time.Sleep(40 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	})
	var calls atomic.Int64
	errBoom := errors.New("boom")
	// Each event lasts 200 ms, long enough for the clients to start
	// requests during it on a loaded machine.
	sched := Schedule{
		Start: 100 * time.Millisecond,
		Every: 250 * time.Millisecond,
		Count: 4,
		Run: func(ctx context.Context, i int) error {
			calls.Add(1)
			slow.Store(true)
			defer slow.Store(false)
			time.Sleep(200 * time.Millisecond)
			if i == 2 {
				return errBoom
			}
			return nil
		},
	}
	const tail = 150 * time.Millisecond
	res, err := Run(t.Context(), s.URL, Options{
		Clients: 4, Duration: 10 * time.Second, Schedule: sched, Tail: tail, Margin: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 4 || len(res.Events) != 4 {
		t.Fatalf("Schedule.Run called %d times, %d events; want 4\n%v", got, len(res.Events), res)
	}
	for i, ev := range res.Events {
		if ev.Index != i {
			t.Errorf("Events[%d].Index = %d", i, ev.Index)
		}
		if ev.Duration < 200*time.Millisecond {
			t.Errorf("Events[%d].Duration = %v, want >= 200ms", i, ev.Duration)
		}
		if wantErr := i == 2; (ev.Error != "") != wantErr || errors.Is(ev.Err, errBoom) != wantErr {
			t.Errorf("Events[%d] error = %q, want an error only for event 2", i, ev.Error)
		}
		if i == 0 && ev.Start < sched.Start {
			t.Errorf("Events[0].Start = %v, want >= %v", ev.Start, sched.Start)
		}
		if i > 0 && ev.Start-res.Events[i-1].Start < sched.Every {
			t.Errorf("Events[%d] started %v after the previous one, want >= %v", i, ev.Start-res.Events[i-1].Start, sched.Every)
		}
		w := ev.Window
		if w.From != ev.Start-20*time.Millisecond || w.To != ev.End()+20*time.Millisecond {
			t.Errorf("Events[%d].Window = [%v, %v], want event ± 20ms", i, w.From, w.To)
		}
		// Requests started while the event ran waited 40 ms.
		if w.Requests == 0 || w.Failed != 0 || w.Max < 40*time.Millisecond || w.P99 > w.Max {
			t.Errorf("Events[%d].Window = %+v, want requests, no failures, max >= 40ms", i, w)
		}
		if w.WorstAdded != w.Max-res.Steady.P50 {
			t.Errorf("Events[%d].Window.WorstAdded = %v, want max %v - steady p50 %v", i, w.WorstAdded, w.Max, res.Steady.P50)
		}
	}
	last := res.Events[3].End()
	// At least the tail; well before the 10 s Duration.
	if res.Elapsed < last+tail || res.Elapsed > last+tail+5*time.Second {
		t.Errorf("Run() elapsed %v, want about %v (last event end + tail)", res.Elapsed, last+tail)
	}
	if res.Steady.Requests == 0 || res.Steady.P50 >= 40*time.Millisecond {
		t.Errorf("Run() steady = %+v, want fast steady requests", res.Steady)
	}
	if res.Failed() != 0 {
		t.Errorf("Run() failed = %d, want 0", res.Failed())
	}
}

func TestScheduleEvents(t *testing.T) {
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tests := []struct {
		name      string
		sched     Schedule
		duration  time.Duration
		tail      time.Duration
		minEvents int
		maxEvents int
	}{
		// An event longer than Every delays the next one: they never overlap.
		{"slow events", Schedule{Every: 10 * time.Millisecond, Count: 3, Run: sleeper(60 * time.Millisecond)}, 10 * time.Second, 10 * time.Millisecond, 3, 3},
		// Count 0 runs until the duration ends, and the event in progress is cancelled.
		{"unbounded", Schedule{Every: 100 * time.Millisecond, Run: sleeper(time.Hour)}, 300 * time.Millisecond, 0, 1, 1},
		// Events never start early (at most 7 in 300 ms); how many run
		// depends on the scheduler, but more than one.
		{"unbounded quick", Schedule{Every: 50 * time.Millisecond, Run: sleeper(0)}, 300 * time.Millisecond, 0, 2, 7},
		// The duration wins over a schedule that would take longer: at
		// most the 3 due before it ends.
		{"duration first", Schedule{Start: 100 * time.Millisecond, Every: 100 * time.Millisecond, Count: 50, Run: sleeper(0)}, 350 * time.Millisecond, time.Second, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res, err := Run(t.Context(), s.URL, Options{Clients: 2, Duration: tt.duration, Schedule: tt.sched, Tail: tt.tail})
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > tt.duration+5*time.Second {
				t.Errorf("Run() took %v, want at most about %v", took, tt.duration)
			}
			if n := len(res.Events); n < tt.minEvents || n > tt.maxEvents {
				t.Fatalf("Run() ran %d events, want %d..%d", n, tt.minEvents, tt.maxEvents)
			}
			for i := 1; i < len(res.Events); i++ {
				if res.Events[i].Start < res.Events[i-1].End() {
					t.Errorf("Events[%d] started at %v before Events[%d] ended at %v", i, res.Events[i].Start, i-1, res.Events[i-1].End())
				}
			}
		})
	}
}

// sleeper returns a disruption that sleeps for d or until cancelled.
func sleeper(d time.Duration) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
