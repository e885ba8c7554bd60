package systemd

import (
	"errors"
	"testing"
	"time"
)

func TestParseWatchdog(t *testing.T) {
	tests := []struct {
		usec, pid string
		want      time.Duration
		wantErr   error // nil: any error is checked by errText
		errText   bool
	}{
		{"2000000", "", 2 * time.Second, nil, false},
		{"500000", "100", 500 * time.Millisecond, nil, false},
		{"", "", 0, ErrNoWatchdog, true},
		{"1000", "99", 0, ErrNoWatchdog, true},
		{"abc", "", 0, nil, true},
		{"-5", "", 0, nil, true},
		{"0", "", 0, nil, true},
		{"1000", "x", 0, nil, true},
	}
	for _, tt := range tests {
		got, err := parseWatchdog(tt.usec, tt.pid, 100)
		if tt.errText != (err != nil) {
			t.Errorf("parseWatchdog(%q, %q) error = %v, want error %v", tt.usec, tt.pid, err, tt.errText)
			continue
		}
		if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
			t.Errorf("parseWatchdog(%q, %q) error = %v, want %v", tt.usec, tt.pid, err, tt.wantErr)
		}
		if got != tt.want {
			t.Errorf("parseWatchdog(%q, %q) = %v, want %v", tt.usec, tt.pid, got, tt.want)
		}
	}
}
