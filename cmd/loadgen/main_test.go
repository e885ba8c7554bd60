package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-dev/baton/internal/load"
)

func newServer(t *testing.T, status int) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(load.PIDHeader, "77")
		w.WriteHeader(status)
		io.WriteString(w, "hi")
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func TestRun(t *testing.T) {
	ok := newServer(t, http.StatusOK)
	busy := newServer(t, http.StatusServiceUnavailable)
	dir := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{"keepalive", []string{"-url", ok, "-c", "2", "-n", "50"}, 0,
			[]string{"requests 50 ", "failed 0", "pids (1): 77×50"}, nil},
		{"newconn", []string{"-url", ok, "-c", "2", "-n", "20", "-mode", "newconn"}, 0,
			[]string{"newconn", "requests 20 ", "dials 20"}, nil},
		{"failures exit 1", []string{"-url", busy, "-c", "1", "-n", "5"}, 1,
			[]string{"failures: status 5"}, []string{"5 of 5 requests failed"}},
		{"disruptions", []string{"-url", ok, "-c", "1", "-d", "10s", "-disrupt-cmd", `echo event $LOADGEN_EVENT`,
			"-disrupt-start", "10ms", "-disrupt-every", "20ms", "-disrupt-count", "3", "-tail", "10ms"}, 0,
			[]string{"events (", "worst+"}, []string{"event 0\n", "event 1\n", "event 2\n"}},
		{"failing disruption", []string{"-url", ok, "-c", "1", "-disrupt-cmd", "exit 3",
			"-disrupt-start", "0s", "-disrupt-count", "1", "-tail", "10ms"}, 0,
			[]string{"exit 3: exit status 3"}, nil},
		{"samples", []string{"-url", ok, "-c", "1", "-n", "10", "-samples", filepath.Join(dir, "s.csv")}, 0,
			[]string{"requests 10 "}, nil},
		{"bad flag", []string{"-bogus"}, 2, nil, []string{"usage: loadgen"}},
		{"bad mode", []string{"-mode", "pipelined"}, 2, nil, []string{"unknown mode", "usage: loadgen"}},
		{"bad count", []string{"-c", "0"}, 2, nil, []string{"usage: loadgen"}},
		{"extra argument", []string{"-url", ok, "extra"}, 2, nil, []string{`unexpected argument "extra"`}},
		{"bad url", []string{"-url", "https://127.0.0.1/", "-n", "1"}, 1, nil, []string{"loadgen: load: target"}},
		{"help", []string{"-h"}, 0, []string{"usage: loadgen", "-disrupt-cmd"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			code := exitCode(err, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) exit code %d (err %v), want %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, err, tt.wantCode, &stdout, &stderr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("run(%q) stdout =\n%s\nwant it to contain %q", tt.args, &stdout, w)
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("run(%q) stderr =\n%s\nwant it to contain %q", tt.args, &stderr, w)
				}
			}
		})
	}
	b, err := os.ReadFile(filepath.Join(dir, "s.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 11 || !strings.HasPrefix(string(b), "start_s,latency_ms,class,pid\n") {
		t.Errorf("samples file =\n%s\nwant a header and 10 lines", b)
	}
}

func TestRunJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-url", newServer(t, http.StatusOK), "-c", "3", "-n", "30", "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run() = %v\n%s", err, &stderr)
	}
	var res load.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not a JSON Result: %v\n%s", err, &stdout)
	}
	if res.Requests != 30 || res.OK != 30 || res.PIDs["77"] != 30 || res.Clients != 3 {
		t.Errorf("JSON summary = %+v, want 30 ok requests from pid 77 by 3 clients", res)
	}
	if errors.Is(err, errFailed) {
		t.Error("run() reported failures")
	}
}
