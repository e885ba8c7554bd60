package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// controlSock is webapp's control socket inside the box.
const controlSock = "/run/webapp/control.sock"

// TestControlHostileCallers: the control socket refuses other users twice
// over (the file's mode, then SO_PEERCRED when the mode is loosened), and
// answers garbage, over-long and unfinished requests from root with one
// clear error line. None of them reloads, and the service keeps serving.
func TestControlHostileCallers(t *testing.T) {
	s := startService(t, serviceOptions{})
	s.get(t, "/") // activates webapp.service
	pid := s.mainPID(t)
	if pid == "" || pid == "0" {
		t.Fatalf("webapp.service has no MainPID after a request: %v", s.show(t, "ActiveState", "SubState"))
	}
	t.Logf("MainPID %s; %s: %s", pid, controlSock, strings.TrimSpace(s.box.Run(t, "stat", "-c", "%A %U", controlSock)))

	// Requests from root straight to the socket, through the box's root.
	hostPath := s.box.Root() + controlSock
	// A caller that connects and says nothing holds one answer back for
	// the request timeout; start it first so that the others run meanwhile.
	silent := make(chan string, 1)
	go func() { silent <- rawRequest(hostPath, nil, false, 40*time.Second) }()

	t.Run("root", func(t *testing.T) {
		tests := []struct {
			name  string
			req   []byte
			close bool // shut the write side after req
			want  string
		}{
			{"1 MiB line", append(bytes.Repeat([]byte("x"), 1<<20), '\n'), false,
				"error request too long: more than 4103 bytes\n"},
			{"1 MiB of reload", bytes.Repeat([]byte("reload"), 1<<20/6), true,
				"error request too long: more than 4103 bytes\n"},
			{"binary junk", []byte("\x00\xff\xfe\x01\x7f junk\r\n"), false,
				`error unknown request "\x00\xff\xfe\x01\x7f junk\r": want reload, pid or status` + "\n"},
			{"unknown verb", []byte("restart\n"), false,
				`error unknown request "restart": want reload, pid or status` + "\n"},
			{"reload with spaces", []byte(" reload \n"), false,
				`error unknown request " reload ": want reload, pid or status` + "\n"},
			{"no newline then EOF", []byte("reload"), true,
				"error bad request: 6 bytes without a newline\n"},
			{"nothing then EOF", nil, true,
				"error bad request: empty\n"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := rawRequest(hostPath, tt.req, tt.close, 30*time.Second); got != tt.want {
					t.Errorf("answer to %s = %q, want %q", tt.name, got, tt.want)
				}
			})
		}
		const wantSilent = "error bad request: no request line within 10s\n"
		if got := <-silent; got != wantSilent {
			t.Errorf("answer to a silent caller = %q, want %q", got, wantSilent)
		}
		s.waitJournal(t, 20*time.Second, "upgrade: control request refused: request too long: more than 4103 bytes",
			`upgrade: control request refused: unknown request \"restart\"`, // quoted by logfmt
			"upgrade: control request refused: bad request: no request line within 10s")
		s.checkUnchanged(t, pid)
	})

	t.Run("nobody, mode 0600", func(t *testing.T) {
		out, stderr, err := s.box.Exec(context.Background(), "runuser", "-u", "nobody", "--", "/usr/bin/webapp", "reload", "--control", controlSock)
		t.Logf("runuser -u nobody -- webapp reload: exit %s: %s", exitStatus(err), strings.TrimSpace(out+stderr))
		if err == nil || exitStatus(err) == "0" {
			t.Errorf("webapp reload as nobody succeeded, want a non-zero exit")
		}
		if want := "upgrade: permission denied: cannot connect to " + controlSock + " (run as root or as the service's user)"; !strings.Contains(stderr, want) || !strings.Contains(stderr, "connect: permission denied") {
			t.Errorf("webapp reload as nobody said %q, want %q and the connect error", stderr, want)
		}
		s.checkUnchanged(t, pid)
	})

	t.Run("nobody, mode 0666", func(t *testing.T) {
		s.box.Run(t, "chmod", "666", controlSock)
		out, stderr, err := s.box.Exec(context.Background(), "runuser", "-u", "nobody", "--", "/usr/bin/webapp", "reload", "--control", controlSock)
		t.Logf("runuser -u nobody -- webapp reload: exit %s: %s", exitStatus(err), strings.TrimSpace(out+stderr))
		if err == nil || exitStatus(err) == "0" {
			t.Errorf("webapp reload as nobody through a loosened socket succeeded, want a non-zero exit")
		}
		if want := "upgrade: permission denied: uid 65534 is neither root nor the service's user"; !strings.Contains(stderr, want) {
			t.Errorf("webapp reload as nobody said %q, want %q", stderr, want)
		}
		line := s.waitJournal(t, 10*time.Second, "upgrade: control request from uid 65534 refused")
		t.Logf("journal: %s", line)
		s.checkUnchanged(t, pid)
	})

	// After all that the control socket still does its job.
	if r := s.reload(context.Background()); r.Err != nil {
		t.Errorf("systemctl reload after the hostile callers: %v: %s\n%s", r.Err, r.Output, s.journal(t))
	}
	if after := s.mainPID(t); after == pid {
		t.Errorf("MainPID %s after a real reload, want a new one", after)
	}
}

// rawRequest connects to the unix socket at path, writes req (closing the
// write side after it if closeWrite), and returns everything the server
// answered before it closed, or what went wrong.
func rawRequest(path string, req []byte, closeWrite bool, within time.Duration) string {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	go func() {
		// Fails once the server has answered a long request and closed.
		if len(req) > 0 {
			c.Write(req)
		}
		if closeWrite {
			c.(*net.UnixConn).CloseWrite()
		}
	}()
	got, err := io.ReadAll(c)
	if err != nil && len(got) == 0 {
		return "read: " + err.Error()
	}
	return string(got)
}

// waitJournal waits until webapp.service's journal holds every one of
// want, and returns the last line holding the first.
func (s *service) waitJournal(t *testing.T, within time.Duration, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		j, err := s.journalCtx(context.Background())
		if err != nil {
			t.Fatalf("journalctl: %v", err)
		}
		if m := missing(j, want...); m == "" {
			return lastLine(j, want[0])
		} else if time.Now().After(deadline) {
			t.Fatalf("after %v webapp.service's journal lacks %q:\n%s", within, m, j)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkUnchanged checks that nothing reloaded: MainPID is still pid, the
// journal has no upgrade, and the service answers.
func (s *service) checkUnchanged(t *testing.T, pid string) {
	t.Helper()
	if now := s.mainPID(t); now != pid {
		t.Errorf("MainPID %s, want %s unchanged", now, pid)
	}
	if j := s.journal(t); strings.Contains(j, "upgrade: starting") {
		t.Errorf("journal shows an upgrade:\n%s", lastLine(j, "upgrade: starting"))
	}
	resp, body := s.get(t, "/")
	if got := resp.Header.Get("X-Webapp-Pid"); resp.StatusCode != 200 || got != pid {
		t.Errorf("GET / = %d from pid %q (%q), want 200 from %s", resp.StatusCode, got, strings.TrimSpace(body), pid)
	}
	if st := s.show(t, "ActiveState", "NRestarts"); st["ActiveState"] != "active" || st["NRestarts"] != "0" {
		t.Errorf("webapp.service %v, want active with NRestarts=0", st)
	}
}
