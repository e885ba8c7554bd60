package baton_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/baton-dev/baton"
)

// TestSlogLogger logs through a *slog.Logger at each level, and not below
// the handler's.
func TestSlogLogger(t *testing.T) {
	var buf bytes.Buffer
	l := baton.SlogLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l.Infof("quiet %d", 1)
	l.Warnf("draining %d connections", 3)
	l.Errorf("stopped: %s", "cut")
	out := buf.String()
	for _, want := range []string{`level=WARN msg="draining 3 connections"`, `level=ERROR msg="stopped: cut"`} {
		if !strings.Contains(out, want) {
			t.Errorf("slog output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "quiet") {
		t.Errorf("an info message got through a warn-level handler: %q", out)
	}
}
