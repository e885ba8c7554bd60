package main

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// getNew GETs path on a new connection.
func getNew(addr, path string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitLog waits up to 10 s for the child's log to contain s.
func (c *child) waitLog(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(c.stderr.String(), s); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("webapp did not log %q within 10 s", s)
		}
	}
}

// TestReadyzShutdownDelay: /readyz is 200 while serving; on SIGTERM with
// --shutdown-delay it turns 503 at once while / is still answered on new
// connections, and webapp then drains and exits 0. /healthz (liveness)
// stays 200 meanwhile.
func TestReadyzShutdownDelay(t *testing.T) {
	c := startWebapp(t, nil, "--shutdown-delay", "3s", "--idle-grace", "100ms")
	if code, body, err := getNew(c.addr, "/readyz"); err != nil || code != 200 || body != "ready\n" {
		t.Fatalf("GET /readyz = %d %q, %v; want 200 \"ready\\n\"", code, body, err)
	}
	c.signal(t, syscall.SIGTERM)
	c.waitLog(t, "stopping: not ready, still serving for 3s before the drain")
	for _, r := range []struct {
		path, body string
		code       int
	}{{"/readyz", "stopping\n", 503}, {"/healthz", "ok\n", 200}, {"/", "hello world\n", 200}} {
		code, body, err := getNew(c.addr, r.path)
		if err != nil || code != r.code || body != r.body {
			t.Errorf("GET %s within the shutdown delay = %d %q, %v; want %d %q", r.path, code, body, err, r.code, r.body)
		}
	}
	if strings.Contains(c.stderr.String(), "stopping: draining") {
		t.Errorf("webapp began draining before the delay's requests were answered:\n%s", c.stderr.String())
	}
	if code := c.wait(t, 15*time.Second); code != 0 {
		t.Errorf("webapp exit = %d, want 0", code)
	}
}
