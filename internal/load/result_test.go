package load

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i))
	}
	tests := []struct {
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{[]time.Duration{7}, 50, 7},
		{[]time.Duration{7}, 99, 7},
		{[]time.Duration{1, 2}, 50, 1},
		{[]time.Duration{1, 2}, 90, 2},
		{hundred, 50, 50},
		{hundred, 90, 90},
		{hundred, 99, 99},
		{hundred[:10], 99, 10},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("percentile(%d values, %d) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
		}
	}
}

// TestComputeStats checks the window and steady definitions on samples
// made by hand.
func TestComputeStats(t *testing.T) {
	ms := time.Millisecond
	var samples []Sample
	// One request every 10 ms for 10 s taking 1 ms, except that those
	// started in [3 s, 3.5 s) take 100 ms and one at 3.2 s is reset.
	for at := time.Duration(0); at < 10*time.Second; at += 10 * ms {
		s := Sample{Start: at, Latency: ms}
		if at >= 3*time.Second && at < 3500*ms {
			s.Latency = 100 * ms
		}
		if at == 3200*ms {
			s.Class = ClassReset
		}
		samples = append(samples, s)
	}
	res := &Result{
		Samples: samples,
		Events: []Event{
			{Index: 0, Start: 3 * time.Second, Duration: 500 * ms},
			{Index: 1, Start: 7 * time.Second, Duration: 100 * ms},
		},
	}
	computeStats(res, time.Second)

	if res.Latency.Requests != 1000 || res.Latency.Failed != 1 || res.Latency.Max != 100*ms {
		t.Errorf("Latency = %+v, want 1000 requests, 1 failed, max 100ms", res.Latency)
	}
	// Windows [2 s, 4.5 s] and [6 s, 8.1 s] hold 251 + 211 requests.
	if want := int64(1000 - 251 - 211); res.Steady.Requests != want || res.Steady.Failed != 0 || res.Steady.Max != ms || res.Steady.P50 != ms {
		t.Errorf("Steady = %+v, want %d requests of 1ms", res.Steady, want)
	}
	w0 := res.Events[0].Window
	if w0.From != 2*time.Second || w0.To != 4500*ms || w0.Requests != 251 || w0.Failed != 1 || w0.Max != 100*ms || w0.P99 != 100*ms || w0.WorstAdded != 99*ms {
		t.Errorf("Events[0].Window = %+v, want [2s, 4.5s], 251 requests, 1 failed, p99 = max = 100ms, worst added 99ms", w0)
	}
	w1 := res.Events[1].Window
	if w1.Requests != 211 || w1.Failed != 0 || w1.Max != ms || w1.WorstAdded != 0 {
		t.Errorf("Events[1].Window = %+v, want 211 requests, max 1ms, worst added 0", w1)
	}
}

func TestComputeStatsNoSteady(t *testing.T) {
	res := &Result{
		Samples: []Sample{{Start: 0, Latency: 5}, {Start: 1, Latency: 7}, {Start: 2, Latency: 9}},
		Events:  []Event{{Start: 0, Duration: 2}},
	}
	computeStats(res, 1)
	if res.Steady.Requests != 0 || res.Events[0].Window.WorstAdded != 9-7 {
		t.Errorf("Steady = %+v, WorstAdded = %v; want no steady requests and worst added against the overall p50 (2)", res.Steady, res.Events[0].Window.WorstAdded)
	}
}

func TestResultJSON(t *testing.T) {
	res := &Result{
		URL:            "http://127.0.0.1:8080/",
		Mode:           NewConnection,
		Requests:       3,
		OK:             1,
		Failures:       FailureCounts{EOF: 1, Status: 1},
		PIDs:           map[string]int64{"10": 2},
		Versions:       map[string]int64{},
		Latency:        Stats{Requests: 3, Failed: 2, P50: 1500, Max: 1500},
		Events:         []Event{{Index: 0, Start: time.Second, Error: "exit status 1", Window: Window{WorstAdded: 5}}},
		FailureDetails: []Failure{{Class: ClassEOF, Error: "EOF", Written: true, ConnRequest: 2}},
		Samples:        []Sample{{Start: 1}},
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"mode":"newconn"`, `"failures":{"refused":0,"reset":0,"eof":1,"timeout":0,"status":1,"truncated":0,"other":0}`,
		`"p50_ns":1500`, `"pids":{"10":2}`, `"worst_added_ns":5`, `"error":"exit status 1"`,
		`"class":"eof"`, `"conn_request":2`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("json.Marshal(Result) = %s\nwant it to contain %s", b, want)
		}
	}
	if strings.Contains(string(b), `"samples"`) {
		t.Errorf("json.Marshal(Result) contains the samples: %s", b)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	if back.Mode != NewConnection || back.FailureDetails[0].Class != ClassEOF || back.Failed() != 2 {
		t.Errorf("round trip = %+v", back)
	}
	if s := res.String(); !strings.Contains(s, "failed 2") || !strings.Contains(s, "eof 1") || !strings.Contains(s, "pids (1): 10×2") {
		t.Errorf("Result.String() =\n%s\nwant failure counts and pids", s)
	}
}

func TestWriteSamples(t *testing.T) {
	res := &Result{Samples: []Sample{
		{Start: 1500 * time.Millisecond, Latency: 2500 * time.Microsecond, PID: 42},
		{Start: 2 * time.Second, Latency: time.Second, Class: ClassTimeout},
	}}
	var b strings.Builder
	if err := res.WriteSamples(&b); err != nil {
		t.Fatal(err)
	}
	want := "start_s,latency_ms,class,pid\n1.500000,2.500,ok,42\n2.000000,1000.000,timeout,0\n"
	if b.String() != want {
		t.Errorf("WriteSamples() = %q, want %q", b.String(), want)
	}
}

func TestClassAndModeText(t *testing.T) {
	for c := ClassOK; c < numClasses; c++ {
		b, err := c.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Class
		if err := back.UnmarshalText(b); err != nil || back != c {
			t.Errorf("Class round trip %v -> %s -> %v, %v", c, b, back, err)
		}
	}
	for _, s := range []string{"keepalive", "newconn"} {
		m, err := ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("pipelined"); err == nil {
		t.Error("ParseMode(pipelined) succeeded, want an error")
	}
}
