package bench

import (
	"strings"
	"testing"
	"time"
)

// TestScaleTargets checks the marks of scenario 10 on made-up runs: the
// targets apply to the hand-over variant only, and the new connections
// per reload of both clients count.
func TestScaleTargets(t *testing.T) {
	with := ScaleVariant{Handover: true, Title: "with hand-over"}
	without := ScaleVariant{Title: "without"}
	reloads := make([]ProtoEvent, 20)
	run := func(v ScaleVariant, client string, failed, opened int64, ratio float64) ScaleRun {
		r := ScaleRun{Conns: 1000, Variant: v, Client: client, Requests: 1e6, Failed: failed, Opened: opened, Events: reloads}
		if client == "generator" {
			r.Throughput = &Throughput{Steady: 1000, Pooled: 1000 * ratio, Windows: []float64{1000 * ratio}}
		}
		return r
	}
	s := &Scale{Reloads: 20, Margin: time.Second, HandoverFlag: true, Runs: []ScaleRun{
		run(with, "generator", 0, 20*10, 0.9), // 10 a reload: 1 %
		run(with, "wrk", 0, 0, 0),
		run(without, "generator", 500, 20*1000, 0.5),
		run(without, "wrk", 900, 20*1000, 0),
	}}
	if f, ev := s.countFailed(1000); f != 0 || ev != 0 {
		t.Errorf("countFailed(1000) = %d, %d; want 0, 0 (the variant without hand-over is the contrast)", f, ev)
	}
	if !s.dialsOK(1000) || !s.throughputOK(1000) {
		t.Errorf("dialsOK, throughputOK = %t, %t; want true, true", s.dialsOK(1000), s.throughputOK(1000))
	}
	if m := s.misses(); len(m) != 0 {
		t.Errorf("misses() = %q, want none", m)
	}
	s.Runs[1].Opened = 20 * 11 // wrk: 1.1 % a reload
	if s.dialsOK(1000) {
		t.Error("dialsOK with wrk opening 1.1 % of the connections a reload = true, want false")
	}
	if m := s.misses(); len(m) != 1 || !strings.Contains(m[0], "wrk") {
		t.Errorf("misses() = %q, want one naming wrk", m)
	}
	// A webapp without the flag: today's behaviour carries the targets.
	s.HandoverFlag = false
	s.Runs = s.Runs[2:]
	if f, _ := s.countFailed(1000); f != 1400 || s.throughputOK(1000) || s.dialsOK(1000) {
		t.Errorf("without the flag: countFailed = %d, throughputOK %t, dialsOK %t; want 1400, false, false", f, s.throughputOK(1000), s.dialsOK(1000))
	}
	if m := s.misses(); len(m) != 4 || !strings.Contains(m[0], "--conn-handover") {
		t.Errorf("misses() without the flag = %q, want 4, the first saying the hand-over was not measured", m)
	}
	var b strings.Builder
	writeScale(&b, s, "_caption_")
	s.writeHeadline(&b)
	for _, want := range []string{"## 10.", "1,400", "today", "❌"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the section lacks %q", want)
		}
	}
}
