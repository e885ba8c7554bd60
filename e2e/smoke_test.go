package e2e

import (
	"strings"
	"testing"
)

// TestSmoke is the shortest path through the real thing: the first
// connection starts webapp.service from webapp.socket, and the answer
// comes from its main process.
func TestSmoke(t *testing.T) {
	s := startService(t, serviceOptions{})
	if st := s.show(t, "ActiveState")["ActiveState"]; st != "inactive" {
		t.Errorf("before the first connection ActiveState=%s, want inactive", st)
	}
	resp, body := s.get(t, "/")
	if body != "hello world\n" {
		t.Fatalf("GET / = %q, want hello world", body)
	}
	p := s.show(t, "ActiveState", "MainPID", "StatusText")
	if p["ActiveState"] != "active" {
		t.Errorf("ActiveState=%s, want active", p["ActiveState"])
	}
	// webapp runs in the box's pid namespace, as does systemd's MainPID.
	if got := resp.Header.Get("X-Webapp-Pid"); got != p["MainPID"] {
		t.Errorf("answer from pid %s, MainPID=%s", got, p["MainPID"])
	}
	if !strings.Contains(p["StatusText"], "serving http on") || !strings.Contains(p["StatusText"], "(systemd)") {
		t.Errorf("StatusText=%q, want webapp's serving status from the systemd socket", p["StatusText"])
	}
}
