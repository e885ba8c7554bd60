package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton"
)

// TestStatus asks the running webapp for its status with `webapp status`
// under systemd: after a reload, after a failed one, and during a stop's
// drain with a request in flight.
func TestStatus(t *testing.T) {
	s := startService(t, serviceOptions{ServiceDropIn: "Environment=WEBAPP_OPTS=--reload-timeout=5s"})
	good := buildWebapp(t, "")
	s.box.CopyFile(t, good, goodClient, 0o755)
	status := func() (baton.Status, string) {
		t.Helper()
		text := s.box.Run(t, goodClient, "status", "--control", "/run/webapp/control.sock")
		js := s.box.Run(t, goodClient, "status", "--control", "/run/webapp/control.sock", "--json")
		var st baton.Status
		if err := json.Unmarshal([]byte(js), &st); err != nil {
			t.Fatalf("webapp status --json: %v\n%s", err, js)
		}
		return st, text
	}

	s.get(t, "/") // socket activation starts it
	s.box.Systemctl(t, "reload", "webapp.service")
	st, text := status()
	t.Logf("webapp status after a reload:\n%s", text)
	if pid := s.mainPID(t); strconv.Itoa(st.PID) != pid || st.Generation != 2 || st.State != "serving" || st.Reloads != 1 ||
		st.LastReload != nil || len(st.Sockets) == 0 || st.Sockets[0].Name != "http" {
		t.Errorf("status after a reload: %+v, want MainPID %s, generation 2, serving, 1 reload, none by this generation yet", st, pid)
	}
	if !strings.Contains(text, "generation 2, serving") || !strings.Contains(text, "reloads: 1, failed: 0") {
		t.Errorf("webapp status after a reload:\n%s\nwant the generation, the state and the reload count", text)
	}

	s.failReload(t, good) // the reload fails
	st, text = status()
	t.Logf("webapp status after a failed reload:\n%s", text)
	if st.Generation != 2 || st.FailedReloads != 1 || st.LastReload == nil || st.LastReload.OK || !strings.Contains(st.LastReload.Error, "exited before it was ready") {
		t.Errorf("status after a failed reload: %+v (last %+v), want generation 2 with the failed reload and its reason", st, st.LastReload)
	}
	if !strings.Contains(text, "last: failed") || !strings.Contains(text, "exited before it was ready") {
		t.Errorf("webapp status after a failed reload:\n%s\nwant the failure and its reason", text)
	}

	// A stop with a request in flight: the drain waits for it, and the
	// status says so meanwhile.
	slow := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Get(s.url + "/slow?ms=4000")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for st, _ = status(); st.Sockets[0].InFlight == 0; st, _ = status() {
		if ctx.Err() != nil {
			t.Fatal("the slow request is not in flight after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.box.Systemctl(t, "stop", "--no-block", "webapp.service")
	for st, text = status(); st.State != "stopping"; st, text = status() {
		if ctx.Err() != nil {
			t.Fatalf("status does not say stopping within 10 s: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("webapp status during the drain:\n%s", text)
	if st.Sockets[0].InFlight != 1 || !strings.Contains(text, "stopping") {
		t.Errorf("status during the drain: %+v\n%s\nwant stopping with the slow request in flight", st, text)
	}
	if err := <-slow; err != nil {
		t.Errorf("the request in flight at the stop: %v", err)
	}
}
