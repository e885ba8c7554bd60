package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestJournalEvents reloads webapp under systemd, lets a reload fail, and
// stops it; each event must be a native journal entry of the unit with
// its MESSAGE_ID and BATON_* fields, so that a journalctl match finds it.
func TestJournalEvents(t *testing.T) {
	s := startService(t, serviceOptions{ServiceDropIn: "Environment=WEBAPP_OPTS=--reload-timeout=5s"})
	good := buildWebapp(t, "")
	s.box.CopyFile(t, good, goodClient, 0o755)
	first, _ := s.get(t, "/")
	firstPID := first.Header.Get("X-Webapp-Pid")

	s.box.Systemctl(t, "reload", "webapp.service")
	second, _ := s.get(t, "/")
	secondPID := second.Header.Get("X-Webapp-Pid")
	if secondPID == firstPID {
		t.Fatalf("pid %s still serves after the reload", firstPID)
	}
	// The reload fails; the second generation goes on serving.
	s.failReload(t, good)
	s.box.Systemctl(t, "stop", "webapp.service")

	type entry map[string]any
	str := func(e entry, k string) string { v, _ := e[k].(string); return v }
	entries := func(match ...string) []entry {
		out := s.box.Journal(t, append([]string{"-u", "webapp.service", "-o", "json"}, match...)...)
		var es []entry
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			var e entry
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("journalctl -o json line %q: %v", line, err)
			}
			if str(e, "BATON_EVENT") != "" {
				es = append(es, e)
			}
		}
		return es
	}
	type want struct {
		event, pid, messageID string
		fields                map[string]string // exact values ("" : present)
	}
	wants := []want{
		{"ready", firstPID, "ba24b9ad858543e59b448b171436e8fa", map[string]string{"BATON_GENERATION": "1"}},
		{"reload-committed", firstPID, "a5d37d247b9c46669ae3ae8a8f9dd5d4", map[string]string{"BATON_GENERATION": "1", "BATON_NEW_PID": secondPID, "BATON_RELOADS": "1", "BATON_DURATION_USEC": ""}},
		{"drain-started", firstPID, "c0c07f604db6492bab90420c94e3f235", map[string]string{"BATON_STOPPING": "false", "BATON_CONNECTIONS": ""}},
		{"drain-finished", firstPID, "abc8124f4cd14e2db942f807acf4a5fd", map[string]string{"BATON_CUT": "0", "BATON_STOPPING": "false"}},
		{"ready", secondPID, "ba24b9ad858543e59b448b171436e8fa", map[string]string{"BATON_GENERATION": "2", "BATON_RELOADS": "1"}},
		{"reload-failed", secondPID, "d7693603f0b24a32911d2cb55e3c2cc5", map[string]string{"BATON_GENERATION": "2", "BATON_FAILED_RELOADS": "1", "BATON_ERROR": ""}},
		{"drain-started", secondPID, "c0c07f604db6492bab90420c94e3f235", map[string]string{"BATON_STOPPING": "true", "BATON_CONNECTIONS": ""}},
		{"drain-finished", secondPID, "abc8124f4cd14e2db942f807acf4a5fd", map[string]string{"BATON_CUT": "0", "BATON_STOPPING": "true"}},
	}
	// The journal may take in the last entries a moment after the stop.
	var missing []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		es := entries()
		missing = missing[:0]
		for _, w := range wants {
			found := false
			for _, e := range es {
				if str(e, "BATON_EVENT") != w.event || str(e, "BATON_PID") != w.pid {
					continue
				}
				ok := str(e, "MESSAGE_ID") == w.messageID && str(e, "_SYSTEMD_UNIT") == "webapp.service" && str(e, "MESSAGE") != ""
				for k, v := range w.fields {
					if got, present := e[k].(string); !present || (v != "" && got != v) {
						ok = false
					}
				}
				if ok {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, w.event+" of pid "+w.pid)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("journal entries missing or without their fields: %s\n%s", strings.Join(missing, "; "),
			s.box.Journal(t, "-u", "webapp.service", "-o", "json"))
	}
	// A match on the field finds every failed reload, and only those.
	failed := entries("BATON_EVENT=reload-failed")
	if len(failed) != 1 || !strings.Contains(str(failed[0], "BATON_ERROR"), "exited before it was ready") {
		t.Errorf("journalctl -u webapp BATON_EVENT=reload-failed: %d entries (%v), want the one failed reload with its reason", len(failed), failed)
	}
}
