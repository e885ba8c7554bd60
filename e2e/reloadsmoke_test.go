package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestReloadSmoke: one `systemctl reload` swaps the binary (a new version
// answers, MainPID changes, no restart), and a stop afterwards is an
// orderly one: systemd waits for the new main process to drain.
func TestReloadSmoke(t *testing.T) {
	s := startService(t, serviceOptions{})
	s.get(t, "/")
	before := s.mainPID(t)
	s.install(t, "9.9.9-smoke")
	out := s.box.Systemctl(t, "reload", "webapp.service")
	if err := s.waitStoppedAccepting(t.Context(), 10*time.Second, before); err != nil {
		t.Fatal(err)
	}
	resp, _ := s.get(t, "/")
	if v := resp.Header.Get("X-Webapp-Version"); v != "9.9.9-smoke" {
		t.Errorf("after reload the answer comes from version %q, want 9.9.9-smoke (%s)", v, out)
	}
	p := s.show(t, "MainPID", "NRestarts", "ActiveState")
	if p["MainPID"] == before || p["MainPID"] != resp.Header.Get("X-Webapp-Pid") {
		t.Errorf("MainPID %s -> %s, answer from %s; want the new generation as MainPID", before, p["MainPID"], resp.Header.Get("X-Webapp-Pid"))
	}
	if p["NRestarts"] != "0" || p["ActiveState"] != "active" {
		t.Errorf("after reload %v, want active with NRestarts=0", p)
	}
	j := s.journal(t)
	if strings.Contains(j, "not our child") {
		t.Errorf("systemd supervises the new generation as an alien process:\n%s", j)
	}
	s.box.Systemctl(t, "stop", "webapp.service")
	p = s.show(t, "Result", "ActiveState")
	if p["Result"] != "success" {
		t.Errorf("stop after reload: Result=%s, want success\n%s", p["Result"], s.journal(t))
	}
	if j := s.journalWith(t, "stopped after"); strings.Contains(j, "SIGKILL") || !strings.Contains(j, "stopped after") {
		t.Errorf("stop after reload was not a drain:\n%s", j)
	}
}
