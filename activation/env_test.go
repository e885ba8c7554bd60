package activation

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseEnv(t *testing.T) {
	const pid, ppid = 100, 50
	tests := []struct {
		name        string
		env         map[string]string
		wantSource  Source
		wantFirst   int
		wantNames   []string
		wantUnnamed bool      // LISTEN_FDNAMES absent
		wantErrVar  string    // the EnvError's variable, "" for no error
		wantClaimed []fdRange // with an error
	}{
		{name: "empty", env: nil, wantSource: Bound},
		{name: "systemd one", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"},
			wantSource: Systemd, wantFirst: 3, wantNames: []string{"http"}},
		{name: "systemd two", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin"},
			wantSource: Systemd, wantFirst: 3, wantNames: []string{"http", "admin"}},
		{name: "systemd names absent", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "2"},
			wantSource: Systemd, wantFirst: 3, wantNames: []string{"unknown", "unknown"}, wantUnnamed: true},
		{name: "systemd empty name", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:"},
			wantSource: Systemd, wantFirst: 3, wantNames: []string{"http", ""}},
		{name: "pid not ours", env: map[string]string{"LISTEN_PID": "101", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"},
			wantSource: Bound},
		{name: "pid not ours, garbage fds", env: map[string]string{"LISTEN_PID": "101", "LISTEN_FDS": "x"},
			wantSource: Bound},
		{name: "pid absent", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"},
			wantSource: Bound},
		{name: "fds absent", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDNAMES": "http"},
			wantSource: Bound},
		{name: "pid not a number", env: map[string]string{"LISTEN_PID": "me", "LISTEN_FDS": "1"},
			wantErrVar: "LISTEN_PID"},
		{name: "pid zero", env: map[string]string{"LISTEN_PID": "0", "LISTEN_FDS": "1"},
			wantErrVar: "LISTEN_PID"},
		{name: "fds not a number", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "two", "LISTEN_FDNAMES": "a:b"},
			wantErrVar: "LISTEN_FDS"},
		{name: "fds negative", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "-1"},
			wantErrVar: "LISTEN_FDS"},
		{name: "fds zero", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""},
			wantErrVar: "LISTEN_FDS"},
		{name: "fds too many", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "2147483645"},
			wantErrVar: "LISTEN_FDS"},
		{name: "fewer names", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"},
			wantErrVar: "LISTEN_FDNAMES", wantClaimed: []fdRange{{3, 2}}},
		{name: "more names", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http:admin"},
			wantErrVar: "LISTEN_FDNAMES", wantClaimed: []fdRange{{3, 1}}},
		{name: "no names for one fd", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "1", "LISTEN_FDNAMES": ""},
			wantErrVar: "LISTEN_FDNAMES", wantClaimed: []fdRange{{3, 1}}},

		{name: "inherited", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "2", "BATON_LISTEN_FDNAMES": "http:admin", "BATON_LISTEN_FDS_START": "5"},
			wantSource: Inherited, wantFirst: 5, wantNames: []string{"http", "admin"}},
		{name: "inherited default start", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http"},
			wantSource: Inherited, wantFirst: 3, wantNames: []string{"http"}},
		{name: "inherited by a grandchild", env: map[string]string{"BATON_LISTEN_PARENT": "49", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http"},
			wantSource: Bound},
		{name: "inherited with foreign LISTEN_PID", env: map[string]string{"LISTEN_PID": "49", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x",
			"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http"},
			wantSource: Inherited, wantFirst: 3, wantNames: []string{"http"}},
		{name: "inherited parent not a number", env: map[string]string{"BATON_LISTEN_PARENT": "x", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http"},
			wantErrVar: "BATON_LISTEN_PARENT"},
		{name: "inherited start below 3", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http", "BATON_LISTEN_FDS_START": "2"},
			wantErrVar: "BATON_LISTEN_FDS_START"},
		{name: "inherited start not a number", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http", "BATON_LISTEN_FDS_START": "three"},
			wantErrVar: "BATON_LISTEN_FDS_START"},
		{name: "inherited fds absent", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDNAMES": "http"},
			wantErrVar: "BATON_LISTEN_FDS"},
		{name: "inherited fds negative", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "-2", "BATON_LISTEN_FDNAMES": "http"},
			wantErrVar: "BATON_LISTEN_FDS"},
		{name: "inherited names absent", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "1"},
			wantErrVar: "BATON_LISTEN_FDNAMES", wantClaimed: []fdRange{{3, 1}}},
		{name: "inherited names mismatch", env: map[string]string{"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http:admin", "BATON_LISTEN_FDS_START": "4"},
			wantErrVar: "BATON_LISTEN_FDNAMES", wantClaimed: []fdRange{{4, 1}}},
		{name: "systemd and inherited", env: map[string]string{"LISTEN_PID": "100", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http",
			"BATON_LISTEN_PARENT": "50", "BATON_LISTEN_FDS": "1", "BATON_LISTEN_FDNAMES": "http", "BATON_LISTEN_FDS_START": "4"},
			wantErrVar: "BATON_LISTEN_PARENT", wantClaimed: []fdRange{{3, 1}, {4, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) {
				v, ok := tt.env[k]
				return v, ok
			}
			p, claimed, err := parseEnv(lookup, pid, ppid)
			if tt.wantErrVar != "" {
				var ee *EnvError
				if !errors.As(err, &ee) || ee.Var != tt.wantErrVar || !errors.Is(err, ErrBadEnvironment) {
					t.Fatalf("parseEnv(%v) error = %v, want an EnvError for %s wrapping ErrBadEnvironment", tt.env, err, tt.wantErrVar)
				}
				if !reflect.DeepEqual(claimed, tt.wantClaimed) {
					t.Errorf("parseEnv(%v) claimed = %v, want %v", tt.env, claimed, tt.wantClaimed)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseEnv(%v) error = %v, want none", tt.env, err)
			}
			if p.source != tt.wantSource || p.first != tt.wantFirst || !reflect.DeepEqual(p.names, tt.wantNames) {
				t.Errorf("parseEnv(%v) = %v first %d names %q, want %v first %d names %q",
					tt.env, p.source, p.first, p.names, tt.wantSource, tt.wantFirst, tt.wantNames)
			}
			if p.source != Bound && p.namesSet == tt.wantUnnamed {
				t.Errorf("parseEnv(%v) namesSet = %v, want %v", tt.env, p.namesSet, !tt.wantUnnamed)
			}
		})
	}
}

func TestEnvErrorMessage(t *testing.T) {
	lookup := func(k string) (string, bool) {
		v, ok := map[string]string{"LISTEN_PID": "7", "LISTEN_FDS": "abc"}[k]
		return v, ok
	}
	_, _, err := parseEnv(lookup, 7, 1)
	const want = `activation: LISTEN_FDS="abc": bad environment: not a number`
	if err == nil || err.Error() != want {
		t.Errorf("parseEnv(LISTEN_FDS=abc) error = %v, want %s", err, want)
	}
}

func TestSourceString(t *testing.T) {
	tests := []struct {
		s    Source
		want string
	}{
		{Bound, "bound"},
		{Systemd, "systemd"},
		{Inherited, "inherited"},
		{Source(9), "Source(9)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Source(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

func TestCheckSpecs(t *testing.T) {
	tests := []struct {
		name  string
		specs []Spec
		ok    bool
	}{
		{"none", nil, true},
		{"one", []Spec{{Name: "http"}}, true},
		{"networks", []Spec{{Name: "a", Network: "tcp4"}, {Name: "b", Network: "tcp6"}, {Name: "c", Network: "unix"}, {Name: "d", Network: "tcp"}}, true},
		{"empty name", []Spec{{Name: ""}}, false},
		{"colon", []Spec{{Name: "a:b"}}, false},
		{"control character", []Spec{{Name: "a\nb"}}, false},
		{"non-ASCII", []Spec{{Name: "hé"}}, false},
		{"too long", []Spec{{Name: string(make([]byte, 256))}}, false},
		{"twice", []Spec{{Name: "http"}, {Name: "http"}}, false},
		{"datagram network", []Spec{{Name: "dns", Network: "udp"}}, true},
		{"unixgram", []Spec{{Name: "log", Network: "unixgram"}}, true},
		{"bad network", []Spec{{Name: "x", Network: "sctp"}}, false},
		{"unixpacket", []Spec{{Name: "x", Network: "unixpacket"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSpecs(tt.specs)
			if tt.ok && err != nil {
				t.Errorf("checkSpecs(%+v) = %v, want nil", tt.specs, err)
			}
			var fe *FDError
			if !tt.ok && (!errors.Is(err, ErrBadSpec) || !errors.As(err, &fe) || fe.FD != -1) {
				t.Errorf("checkSpecs(%+v) = %v, want an FDError wrapping ErrBadSpec", tt.specs, err)
			}
		})
	}
}
