package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetrics turns on webapp-metrics.socket, reloads webapp five times
// and scrapes it: the reload counter counts over all generations, and the
// profiler answers on the metrics socket only.
func TestMetrics(t *testing.T) {
	s := startService(t, serviceOptions{NoStart: true})
	port := s.addSocket(t, optionalSocket{unit: "webapp-metrics.socket", name: "metrics"})
	s.box.Systemctl(t, "enable", "--now", "webapp.socket", "webapp-metrics.socket")
	s.get(t, "/") // socket activation starts webapp.service
	for range 5 {
		s.box.Systemctl(t, "reload", "webapp.service")
	}
	for range 3 {
		s.get(t, "/")
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(url string) (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get(metricsURL + "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`webapp_reloads_total{outcome="ok"} 5`,
		`webapp_reloads_total{outcome="failed"} 0`,
		"webapp_generation 6",
		"webapp_drains_total 0",
		"webapp_cut_connections_total 0",
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("/metrics after 5 reloads lacks %q", want)
		}
	}
	// The sixth generation answered the three requests (and its own
	// health probe): at least three.
	if !strings.Contains(body, `webapp_http_requests_total{socket="http"} `) {
		t.Errorf("/metrics has no request counter of the http socket")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	if code, _ := get(metricsURL + "/debug/pprof/"); code != 200 {
		t.Errorf("GET /debug/pprof/ on the metrics socket: %d, want 200", code)
	}
	if code, _ := get(s.url + "/debug/pprof/"); code != 404 {
		t.Errorf("GET /debug/pprof/ on the public http socket: %d, want 404", code)
	}
	if code, _ := get(s.url + "/metrics"); code != 404 {
		t.Errorf("GET /metrics on the public http socket: %d, want 404", code)
	}
}
