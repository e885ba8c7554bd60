package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/upgrade"
)

// faultFile is where TestHandoverFaults names the hand-over step at which
// a generation of webapp stops itself (WEBAPP_FAULT_FILE).
const faultFile = "/run/webapp/fault"

// After a fault, the service is one of these.
const (
	mainOld       = "old"       // the old generation is still the main process
	mainNew       = "new"       // the new generation took over
	mainRestarted = "restarted" // systemd restarted the service
)

// handoverFault is one row of TestHandoverFaults: at step (a generation
// stopped there by itself; "" means while the old generation drains after
// a successful swap), the victim generation is killed (SIGKILL) or hangs
// (SIGSTOP), and the service must end up as main says.
type handoverFault struct {
	step   upgrade.Step
	victim string // "new" or "old"
	action string // "kill" or "stop"
	// resume, for a stopped victim, is how long it stays stopped before
	// SIGCONT; 0 leaves it stopped (the old generation must kill it).
	resume time.Duration
	// main lists the outcomes allowed: the first one, or where a race
	// between systemd and the processes decides, either.
	main []string
}

func (f handoverFault) String() string {
	at := "during the old generation's drain"
	if f.step != "" {
		at = "at " + string(f.step)
	}
	verb := map[string]string{"kill": "dies", "stop": "hangs"}[f.action]
	return fmt.Sprintf("%s %s %s", f.victim, verb, at)
}

// faultSeen is what one fault run observed.
type faultSeen struct {
	oldPID, newPID, frozen string
	reload                 reloadOutcome
	killed                 bool // a generation was SIGKILLed (by the test or by the old generation)
	slow                   *freshAnswer
	trace                  []string // what the choreography did, for messages
	err                    error
}

// TestHandoverFaults kills (SIGKILL) or stops (SIGSTOP) the new or the old
// generation at each step of the hand-over, under 32 keep-alive clients,
// with the real systemd. A generation pauses at the step named in
// WEBAPP_FAULT_FILE until the test has acted, which makes the point exact. In every case: no
// connection is refused, the only failed requests are those that were on a
// killed process, MainPID ends up naming a live process that answers, the
// outcome is the documented one (upgrade/doc.go), and `systemctl reload`
// exits 0 exactly when the new generation took over.
func TestHandoverFaults(t *testing.T) {
	const reloadTimeout = 4 * time.Second
	pause := 1500 * time.Millisecond
	anyOf := func(m ...string) []string { return m }
	cases := []handoverFault{
		{upgrade.StepStarted, "new", "kill", 0, anyOf(mainOld)},
		{upgrade.StepNewReady, "new", "kill", 0, anyOf(mainOld)},
		{upgrade.StepReady, "new", "kill", 0, anyOf(mainOld)},
		{upgrade.StepNewAccepting, "new", "kill", 0, anyOf(mainOld)},
		{upgrade.StepAnnounced, "new", "kill", 0, anyOf(mainRestarted, mainOld)},
		{"", "new", "kill", 0, anyOf(mainRestarted)},

		{upgrade.StepStarted, "new", "stop", 0, anyOf(mainOld)},
		{upgrade.StepNewReady, "new", "stop", 0, anyOf(mainOld)},
		{upgrade.StepReady, "new", "stop", 0, anyOf(mainOld)},
		{upgrade.StepNewAccepting, "new", "stop", 0, anyOf(mainOld)},
		{upgrade.StepAnnounced, "new", "stop", pause, anyOf(mainNew)},
		{"", "new", "stop", pause, anyOf(mainNew)},

		{upgrade.StepStarted, "old", "kill", 0, anyOf(mainRestarted)},
		{upgrade.StepNewReady, "old", "kill", 0, anyOf(mainRestarted)},
		{upgrade.StepReady, "old", "kill", 0, anyOf(mainRestarted)},
		{upgrade.StepNewAccepting, "old", "kill", 0, anyOf(mainRestarted, mainNew)},
		{upgrade.StepAnnounced, "old", "kill", 0, anyOf(mainNew)},
		{"", "old", "kill", 0, anyOf(mainNew)},

		{upgrade.StepStarted, "old", "stop", pause, anyOf(mainNew)},
		{upgrade.StepNewReady, "old", "stop", pause, anyOf(mainNew)},
		{upgrade.StepReady, "old", "stop", pause, anyOf(mainNew)},
		{upgrade.StepNewAccepting, "old", "stop", pause, anyOf(mainNew)},
		{upgrade.StepAnnounced, "old", "stop", pause, anyOf(mainNew)},
		{"", "old", "stop", pause, anyOf(mainNew)},
	}
	var summary []string
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			s := startService(t, serviceOptions{ServiceDropIn: "Environment=WEBAPP_FAULT_FILE=" + faultFile +
				" WEBAPP_OPTS=--reload-timeout=" + reloadTimeout.String()})
			first, _ := s.get(t, "/")
			var seen faultSeen
			seen.oldPID = first.Header.Get(load.PIDHeader)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := load.Run(ctx, s.url+"/", load.Options{
				Clients:  32,
				Mode:     load.KeepAlive,
				Duration: 2 * time.Minute, // a bound: Tail ends the load
				Timeout:  10 * time.Second,
				Tail:     2 * time.Second,
				Schedule: load.Schedule{
					Start: time.Second,
					Count: 1,
					Run: func(ctx context.Context, _ int) error {
						seen.err = s.fault(ctx, c, &seen)
						return seen.err
					},
				},
			})
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if seen.err != nil {
				t.Fatalf("%v\n%s", seen.err, s.journal(t))
			}
			got, props := s.settle(t, seen)
			j := s.journal(t)
			if !contains(c.main, got) {
				t.Errorf("the service ended %s (%v), want %s\n%s", got, props, strings.Join(c.main, " or "), j)
			}
			// systemctl reload tells the truth: success exactly when the
			// new generation took over.
			if ok := seen.reload.Err == nil; c.step != "" && ok != (got == mainNew) {
				t.Errorf("systemctl reload: exit %s (%s), but the service ended %s", exitStatus(seen.reload.Err), seen.reload.Output, got)
			}
			if res.Failures.Refused != 0 {
				t.Errorf("%d connections refused: %s", res.Failures.Refused, describeFailures(res))
			}
			// Only requests on a killed process may fail: at most one per
			// client connection it held.
			if allowed := int64(0); seen.killed {
				allowed = int64(res.Clients)
				if res.Failed() > allowed {
					t.Errorf("%d requests failed, want at most %d (one per connection of the killed process): %s", res.Failed(), allowed, describeFailures(res))
				}
			} else if res.Failed() != 0 {
				t.Errorf("no process was killed, yet %s", describeFailures(res))
			}
			if seen.slow != nil && !(c.victim == "old" && c.action == "kill") {
				if err := slowOK(*seen.slow, drainSlowMS); err != nil {
					t.Errorf("/slow?ms=%d in flight on the old generation: %v", drainSlowMS, err)
				}
			}
			if t.Failed() {
				t.Logf("what the test did: %s", strings.Join(seen.trace, "; "))
			}
			line := fmt.Sprintf("%s: ended %s (MainPID %s -> %s, NRestarts=%s); systemctl reload exit %s after %v; %d requests, %d failed (%d refused)%s",
				c, got, seen.oldPID, props["MainPID"], props["NRestarts"], exitStatus(seen.reload.Err), seen.reload.Took.Round(time.Millisecond),
				res.Requests, res.Failed(), res.Failures.Refused, map[bool]string{true: ", a process was killed"}[seen.killed])
			t.Log(line)
			summary = append(summary, line)
		})
	}
	t.Logf("hand-over faults under 32 keep-alive clients:\n  %s", strings.Join(summary, "\n  "))
}

// drainSlowMS is the request the old generation drains when the fault
// comes after the swap.
const drainSlowMS = 3000

// fault runs the choreography of c: it names the step in the fault file,
// starts `systemctl reload`, waits for the generation that stopped itself,
// acts on the victim, lets the stopped one go on, and waits for the reload
// command.
func (s *service) fault(ctx context.Context, c handoverFault, seen *faultSeen) error {
	sh := func(args ...string) error {
		_, stderr, err := s.box.Exec(ctx, args...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, stderr)
		}
		return nil
	}
	var slow <-chan freshAnswer
	if c.step == "" {
		var ports []int
		slow, ports = s.slowDialed(1, drainSlowMS)
		if err := s.waitAccepted(ctx, 10*time.Second, seen.oldPID, ports...); err != nil {
			return err
		}
	} else if err := sh("sh", "-c", `printf '%s\n' "$1" >"$2"`, "sh", string(c.step), faultFile); err != nil {
		return err
	}
	reloaded := make(chan reloadOutcome, 1)
	go func() { reloaded <- s.reload(ctx) }()

	if c.step == "" {
		seen.reload = <-reloaded
		if seen.reload.Err != nil {
			return fmt.Errorf("the reload before the fault failed: %v\n%s", seen.reload.Err, seen.reload.Output)
		}
		p, err := s.showCtx(ctx, "MainPID")
		if err != nil {
			return err
		}
		seen.newPID = p["MainPID"]
	} else {
		// Wait for the generation that pauses at the step.
		held := filepath.Join(s.box.Root(), faultFile+".held")
		deadline := time.Now().Add(30 * time.Second)
		for seen.frozen == "" {
			if b, err := os.ReadFile(held); err == nil {
				seen.frozen = strings.TrimSpace(string(b))
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no generation paused at %s within 30 s", c.step)
			}
			select {
			case r := <-reloaded:
				return fmt.Errorf("the reload ended before any generation paused at %s: %v %s", c.step, r.Err, r.Output)
			case <-time.After(20 * time.Millisecond):
			}
		}
		ps, err := s.procsCtx(ctx)
		if err != nil {
			return err
		}
		for _, p := range liveOnly(ps) {
			if p.PID != seen.oldPID && !strings.Contains(p.Cmd, " reload") &&
				(strings.Contains(p.Cmd, " serve") || strings.Contains(p.Cmd, "baton-generation")) {
				seen.newPID = p.PID
			}
		}
		if seen.newPID == "" {
			return fmt.Errorf("no new generation beside the old one %s: %v", seen.oldPID, ps)
		}
		seen.trace = append(seen.trace, fmt.Sprintf("pid %s paused at %s; processes %v", seen.frozen, c.step, ps))
	}

	victim := seen.newPID
	if c.victim == "old" {
		victim = seen.oldPID
	}
	signal := map[string]string{"kill": "-KILL", "stop": "-STOP"}[c.action]
	seen.trace = append(seen.trace, "kill "+signal+" "+victim)
	if err := sh("kill", signal, victim); err != nil {
		return err
	}
	seen.killed = c.action == "kill"
	if c.step != "" {
		// The paused generation goes on (unless it is the one stopped).
		seen.trace = append(seen.trace, "release")
		if err := sh("rm", "-f", faultFile+".held"); err != nil {
			return err
		}
	}
	if c.action == "stop" && c.resume > 0 {
		time.Sleep(c.resume)
		seen.trace = append(seen.trace, "kill -CONT "+victim)
		// It may be gone already: systemd stopped the service.
		s.box.Exec(ctx, "kill", "-CONT", victim)
	}
	if c.step != "" {
		select {
		case seen.reload = <-reloaded:
		case <-time.After(90 * time.Second):
			return errors.New("systemctl reload did not return within 90 s")
		}
	}
	if c.action == "stop" && c.resume == 0 {
		// The old generation killed the hung new one.
		seen.killed = true
	}
	if slow != nil {
		select {
		case a := <-slow:
			seen.slow = &a
		case <-time.After(30 * time.Second):
			return errors.New("the slow request did not end within 30 s")
		}
	}
	return nil
}

// settle waits until the service is running with one live process, its
// MainPID, which answers; it says which generation that is.
func (s *service) settle(t *testing.T, seen faultSeen) (string, map[string]string) {
	t.Helper()
	var props map[string]string
	waitFor(t, 45*time.Second, "the service to run as one process that answers", func() (bool, string) {
		p, err := s.showCtx(context.Background(), "MainPID", "ActiveState", "SubState", "NRestarts")
		if err != nil {
			return false, err.Error()
		}
		props = p
		if p["ActiveState"] != "active" || p["SubState"] != "running" {
			return false, fmt.Sprint(p)
		}
		ps, err := s.procsCtx(context.Background())
		if err != nil {
			return false, err.Error()
		}
		if live := liveOnly(ps); len(live) != 1 || live[0].PID != p["MainPID"] {
			return false, fmt.Sprintf("%v; processes %v", p, ps)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a := getFresh(ctx, s.url+"/")
		if a.Err != nil || a.Status != 200 || a.PID != p["MainPID"] {
			return false, fmt.Sprintf("%v; GET / %v status %d pid %s", p, a.Err, a.Status, a.PID)
		}
		return true, ""
	})
	switch props["MainPID"] {
	case seen.oldPID:
		return mainOld, props
	case seen.newPID:
		return mainNew, props
	}
	if props["NRestarts"] != "0" {
		return mainRestarted, props
	}
	return "MainPID " + props["MainPID"] + " (neither generation, no restart)", props
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
