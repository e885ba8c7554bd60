package upgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestControlAnswers(t *testing.T) {
	u, log := newFuzzUpgrader(t)
	long := strings.Repeat("x", maxRequest+100)
	tooLong := fmt.Sprintf("error request too long: more than %d bytes\n", maxRequest)
	tests := []struct {
		name, req, want string
		upgrade         bool
	}{
		{"pid", "pid\n", fmt.Sprintf("ok %d 0\n", os.Getpid()), false},
		{"reload", "reload\n", "error cannot start the new binary: ", true},
		{"unknown", "restart\n", "error unknown request \"restart\": want reload, pid or status\n", false},
		{"carriage return", "reload\r\n", "error unknown request \"reload\\r\": want reload, pid or status\n", false},
		{"longest line", strings.Repeat("x", maxRequest-1) + "\n", "error unknown request \"" + strings.Repeat("x", 64) + "\": want reload, pid or status\n", false},
		{"line too long", strings.Repeat("x", maxRequest) + "\n", tooLong, false},
		{"no newline, long", long, tooLong, false},
		{"reload then too long", "reload" + long + "\n", tooLong, false},
		{"no newline", "reload", "error bad request: 6 bytes without a newline\n", false},
		{"empty", "", "error bad request: empty\n", false},
		{"files without descriptors", "reload tls.crt:tls.key\n", "error bad request: it names 2 files but carries no descriptors\n", false},
		{"no names", "reload \n", "error bad request: file name \"\": want 1 to 255 characters\n", false},
		{"empty name", "reload a::b\n", "error bad request: file name \"\": want 1 to 255 characters\n", false},
		{"name with a space", "reload a b\n", "error bad request: file name \"a b\": want printable ASCII without ':' or space\n", false},
		{"name twice", "reload a:b:a\n", "error bad request: file name \"a\": given twice\n", false},
		{"17 names", "reload a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p:q\n", "error bad request: 17 files: at most 16\n", false},
		{"longest name", "reload " + strings.Repeat("n", 255) + "\n", "error bad request: it names 1 file but carries no descriptors\n", false},
		{"name too long", "reload " + strings.Repeat("n", 256) + "\n", "error bad request: file name \"" + strings.Repeat("n", 64) + "\": want 1 to 255 characters\n", false},
		{"two spaces", "reload  a\n", "error bad request: file name \" a\": want printable ASCII without ':' or space\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := log.starts.Load()
			got := askControl(t, u, []byte(tt.req))
			if !strings.HasPrefix(got, tt.want) || strings.Count(got, "\n") != 1 {
				t.Errorf("answer to %q = %q, want one line %q", tt.req, got, tt.want)
			}
			if started := log.starts.Load() - before; started != map[bool]int64{true: 1}[tt.upgrade] {
				t.Errorf("request %q started %d upgrades", tt.req, started)
			}
		})
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		line    string
		want    Result
		wantErr string // "" for success
		is      error
	}{
		{line: "ok 42 1500", want: Result{PID: 42, Duration: 1500 * time.Microsecond}},
		{line: "ok 42 0", want: Result{PID: 42}},
		{line: "ok 0 0", wantErr: `upgrade: unexpected answer "ok 0 0" from p`},
		{line: "ok -1 5", wantErr: `upgrade: unexpected answer "ok -1 5" from p`},
		{line: "ok +42 1", wantErr: "unexpected answer"},
		{line: "ok 042 1", wantErr: "unexpected answer"},
		{line: "ok 42 -1", wantErr: "unexpected answer"},
		{line: "ok  42 1", wantErr: "unexpected answer"},
		{line: "ok 42 1 7", wantErr: "unexpected answer"},
		{line: "ok 42", wantErr: "unexpected answer"},
		{line: "ok 4294967296 1", wantErr: "unexpected answer"},
		{line: "ok 42 99999999999999999999", wantErr: "unexpected answer"},
		{line: "", wantErr: "unexpected answer"},
		{line: "error ", wantErr: "unexpected answer"},
		{line: "error permission denied: uid 7 is neither root nor the service's user", wantErr: "upgrade: permission denied: uid 7", is: ErrDenied},
		{line: "error canceled, the service is stopping: context canceled", wantErr: "abandoned", is: ErrStopping},
		{line: "error new generation (pid 7) exited before it was ready", wantErr: "new generation (pid 7) exited before it was ready"},
		{line: "error another upgrade is under way: the new generation it starts would not get this request's files (a, b); reload again once it is done",
			wantErr: "upgrade: another upgrade is under way: the new generation it starts would not get this request's files (a, b)", is: ErrBusy},
	}
	for _, tt := range tests {
		got, err := parseAnswer(tt.line, "p")
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("parseAnswer(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("parseAnswer(%q) = %+v, %v; want an error with %q", tt.line, got, err, tt.wantErr)
		case tt.is != nil && !errors.Is(err, tt.is):
			t.Errorf("parseAnswer(%q) error = %v, want %v", tt.line, err, tt.is)
		}
	}
}

// TestControlSilentCaller: a caller that sends no whole request line is
// answered at the request timeout, and the control socket goes on (a
// read that times out reports no bytes, not a negative count).
func TestControlSilentCaller(t *testing.T) {
	for _, req := range []string{"", "rel"} {
		t.Run(fmt.Sprintf("%q", req), func(t *testing.T) {
			t.Parallel()
			u, _ := newFuzzUpgrader(t)
			srv, cli := connPair(t)
			defer cli.Close()
			go u.answer(context.Background(), srv)
			if req != "" {
				if _, err := cli.Write([]byte(req)); err != nil {
					t.Fatal(err)
				}
			}
			cli.SetReadDeadline(time.Now().Add(requestTimeout + 20*time.Second))
			got, err := io.ReadAll(cli)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if want := fmt.Sprintf("error bad request: no request line within %v\n", requestTimeout); string(got) != want {
				t.Errorf("answer to a silent caller = %q, want %q", got, want)
			}
			if got := askControl(t, u, []byte("pid\n")); !strings.HasPrefix(got, "ok ") {
				t.Errorf("answer to pid after the silent caller = %q, want ok", got)
			}
		})
	}
}
