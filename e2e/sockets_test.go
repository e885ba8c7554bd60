package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// optionalSocket is one of the socket units the packages ship disabled.
type optionalSocket struct {
	unit     string // its unit file in systemd/units
	name     string // FileDescriptorName=
	datagram bool   // ListenDatagram= instead of ListenStream=
}

var optionalSockets = []optionalSocket{
	{unit: "webapp-https.socket", name: "https"},
	{unit: "webapp-grpc.socket", name: "grpc"},
	{unit: "webapp-udp.socket", name: "udp", datagram: true},
}

// addSocket installs the shipped unit of o, disabled, with its address
// moved to a port of its own, and returns the port.
func (s *service) addSocket(t *testing.T, o optionalSocket) int {
	t.Helper()
	s.box.WriteFile(t, "/etc/systemd/system/"+o.unit, unit(t, o.unit), 0o644)
	return s.moveSocket(t, o)
}

// moveSocket moves the address of o to a new port with a drop-in, reloads
// systemd's configuration and returns the port.
func (s *service) moveSocket(t *testing.T, o optionalSocket) int {
	t.Helper()
	port := systemdtest.Port(t)
	key := "ListenStream"
	if o.datagram {
		key = "ListenDatagram"
	}
	s.box.WriteFile(t, "/etc/systemd/system/"+o.unit+".d/port.conf",
		[]byte(fmt.Sprintf("[Socket]\n%s=\n%s=127.0.0.1:%d\n", key, key, port)), 0o644)
	s.box.Systemctl(t, "daemon-reload")
	return port
}

// holders lists the PIDs (in the box) of the processes that hold the
// socket of o bound to 127.0.0.1:port, as `ss -p` sees them: PID 1 while
// the socket unit runs, and every webapp the socket was passed to.
func (s *service) holders(t *testing.T, o optionalSocket, port int) []string {
	t.Helper()
	kind := "-t"
	if o.datagram {
		kind = "-u"
	}
	out := s.box.Run(t, "ss", "-Hlnp", kind, fmt.Sprintf("src 127.0.0.1:%d", port))
	var pids []string
	for _, m := range regexp.MustCompile(`pid=(\d+),`).FindAllStringSubmatch(out, -1) {
		if !slices.Contains(pids, m[1]) {
			pids = append(pids, m[1])
		}
	}
	slices.Sort(pids)
	return pids
}

// requireServing fails the test unless webapp.service is active after a
// start that passed the socket of o. A webapp that does not know the
// socket's name exits at start: that is said plainly.
func (s *service) requireServing(t *testing.T, o optionalSocket, after string) {
	t.Helper()
	p := s.show(t, "ActiveState", "SubState", "Result", "MainPID")
	if p["ActiveState"] == "active" {
		return
	}
	j := s.journal(t)
	// activation's error, quoted in logfmt: fd 3 \"grpc\": unexpected name
	if regexp.MustCompile(`\b` + regexp.QuoteMeta(o.name) + `\\?": unexpected name`).MatchString(j) {
		t.Fatalf("after %s webapp.service is %v: this webapp does not take a socket named %q "+
			"(it needs the webapp that serves http, https, grpc and udp); journal:\n%s", after, p, o.name, j)
	}
	t.Fatalf("after %s webapp.service is %v, want active; journal:\n%s", after, p, j)
}

// TestSocketsTurnOn proves what webapp(1) and the units tell an operator
// about each optional socket on systemd 252:
//   - the packages ship it disabled, and starting webapp.service does not
//     start it;
//   - `systemctl enable --now` is refused while webapp.service runs
//     ("Socket service webapp.service already active, refusing.");
//   - `systemctl enable UNIT` then `systemctl restart webapp.service` starts
//     it and passes it to the new webapp, while webapp.socket keeps
//     answering: 0 failed requests on a new connection each under load, and
//     webapp.socket is never restarted;
//   - a later restart leaves the running socket alone and passes it again;
//   - a new address takes `systemctl stop UNIT` then `systemctl restart
//     webapp.service` (`systemctl restart UNIT` alone is refused like the
//     start above);
//   - `systemctl disable --now UNIT` then `systemctl restart webapp.service`
//     turns it off: the webapp that had it keeps it until the restart.
//
// What systemd passes is read from the kernel (`ss -p`: the new MainPID
// holds the socket), not from webapp, which unsets LISTEN_FDNAMES.
func TestSocketsTurnOn(t *testing.T) {
	t.Parallel()
	for _, o := range optionalSockets {
		t.Run(o.name, func(t *testing.T) {
			t.Parallel()
			s := startService(t, serviceOptions{})
			port := s.addSocket(t, o)
			s.get(t, "/")
			first := s.mainPID(t)

			if st := s.box.Show(t, o.unit, "ActiveState", "UnitFileState"); st["ActiveState"] != "inactive" || st["UnitFileState"] != "disabled" {
				t.Fatalf("after webapp.service started, %s is %v; want it disabled and inactive", o.unit, st)
			}
			if h := s.holders(t, o, port); len(h) != 0 {
				t.Fatalf("before it is turned on, processes %v hold %s's port %d", h, o.unit, port)
			}

			// enable --now: enabled, but the start is refused while
			// webapp.service runs.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, stderr, err := s.box.Exec(ctx, "systemctl", "enable", "--now", o.unit)
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("systemctl enable --now %s while webapp.service runs = %v, want a refused start (systemd 252 refuses it; if this systemd does not, the documentation is out of date)\n%s", o.unit, err, stderr)
			}
			refusal := "Socket service webapp.service already active, refusing."
			if j := s.box.Journal(t, "-u", o.unit, "-o", "cat"); !strings.Contains(j, refusal) {
				t.Errorf("journal of %s after enable --now:\n%s\nwant %q", o.unit, j, refusal)
			}
			if st := s.box.Show(t, o.unit, "ActiveState", "UnitFileState"); st["ActiveState"] == "active" || st["UnitFileState"] != "enabled" {
				t.Errorf("after the refused enable --now, %s is %v; want enabled and not active", o.unit, st)
			}
			if pid := s.mainPID(t); pid != first {
				t.Errorf("the refused enable --now changed webapp's MainPID %s -> %s", first, pid)
			}
			t.Logf("systemctl enable --now %s while webapp.service runs: exit %d, %s", o.unit, ee.ExitCode(), strings.TrimSpace(stderr))

			// The documented sequence: the unit is enabled; restart
			// webapp.service under load on webapp.socket.
			httpBefore := s.box.Show(t, "webapp.socket", "InvocationID", "ActiveEnterTimestampMonotonic")
			loadCtx, cancelLoad := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancelLoad()
			res, err := load.Run(loadCtx, s.url+"/", load.Options{
				Clients:     16,
				Mode:        load.NewConnection,
				Duration:    40 * time.Second,
				MaxRequests: 500_000,
				Tail:        2 * time.Second,
				Schedule:    load.Schedule{Start: time.Second, Count: 1, Run: s.disrupt("restart", "webapp.service")},
			})
			if err != nil {
				t.Fatalf("load.Run(%s) = %v", s.url, err)
			}
			s.requireServing(t, o, "systemctl restart webapp.service")
			if len(res.Events) != 1 || res.Events[0].Err != nil {
				t.Fatalf("systemctl restart webapp.service: %v", res.Events)
			}
			t.Logf("systemctl enable %s; systemctl restart webapp.service under %d %s clients: %d requests in %v, %d failed %+v; restart took %v",
				o.unit, res.Clients, res.Mode, res.Requests, res.Elapsed.Round(time.Millisecond), res.Failed(), res.Failures,
				res.Events[0].Duration.Round(time.Millisecond))
			if res.Failed() != 0 || res.OK == 0 {
				t.Errorf("webapp.socket during the restart: %d OK, %d failed, want 0 failed\n%s", res.OK, res.Failed(), res)
			}
			if httpAfter := s.box.Show(t, "webapp.socket", "InvocationID", "ActiveEnterTimestampMonotonic"); !maps.Equal(httpBefore, httpAfter) {
				t.Errorf("webapp.socket %v -> %v: it was restarted", httpBefore, httpAfter)
			}
			second := s.mainPID(t)
			if st := s.box.Show(t, o.unit, "ActiveState", "SubState"); st["ActiveState"] != "active" {
				t.Fatalf("after the restart %s is %v, want active", o.unit, st)
			}
			if h := s.holders(t, o, port); second == first || !slices.Contains(h, second) {
				t.Fatalf("after the restart MainPID %s -> %s, and %v hold %s's socket; want a new MainPID that holds it", first, second, h, o.unit)
			}
			t.Logf("%s passed to webapp pid %s; status: %s", o.unit, second, s.show(t, "StatusText")["StatusText"])

			// Another restart: the running socket is left alone (same
			// invocation) and passed again.
			extraBefore := s.box.Show(t, o.unit, "InvocationID", "ActiveEnterTimestampMonotonic")
			s.box.Systemctl(t, "restart", "webapp.service")
			s.requireServing(t, o, "a second systemctl restart webapp.service")
			third := s.mainPID(t)
			if extraAfter := s.box.Show(t, o.unit, "InvocationID", "ActiveEnterTimestampMonotonic"); !maps.Equal(extraBefore, extraAfter) {
				t.Errorf("restarting webapp.service restarted the running %s: %v -> %v", o.unit, extraBefore, extraAfter)
			}
			if h := s.holders(t, o, port); third == second || !slices.Contains(h, third) {
				t.Errorf("after the second restart MainPID %s -> %s, and %v hold %s's socket; want a new MainPID that holds it", second, third, h, o.unit)
			}

			// A new address: the socket unit stops (the running webapp
			// keeps its copy), and the restart starts it on the new one.
			oldPort := port
			port = s.moveSocket(t, o)
			s.box.Systemctl(t, "stop", o.unit)
			s.box.Systemctl(t, "restart", "webapp.service")
			s.requireServing(t, o, "systemctl stop "+o.unit+"; systemctl restart webapp.service")
			third = s.mainPID(t)
			if h := s.holders(t, o, port); !slices.Contains(h, third) {
				t.Errorf("after moving %s to port %d and restarting, %v hold it; want MainPID %s", o.unit, port, h, third)
			}
			if h := s.holders(t, o, oldPort); len(h) != 0 {
				t.Errorf("after moving %s away from port %d, %v still hold that port", o.unit, oldPort, h)
			}

			// Turning it off: the socket unit stops, the running webapp
			// keeps its copy until webapp.service restarts.
			s.box.Systemctl(t, "disable", "--now", o.unit)
			if st := s.box.Show(t, o.unit, "ActiveState", "UnitFileState"); st["ActiveState"] != "inactive" || st["UnitFileState"] != "disabled" {
				t.Errorf("after disable --now %s is %v, want disabled and inactive", o.unit, st)
			}
			if h := s.holders(t, o, port); !slices.Equal(h, []string{third}) {
				t.Errorf("after disable --now %s, %v hold its socket; want only webapp (pid %s), until the restart", o.unit, h, third)
			}
			s.box.Systemctl(t, "restart", "webapp.service")
			if p := s.show(t, "ActiveState"); p["ActiveState"] != "active" {
				t.Fatalf("after turning %s off and restarting, webapp.service is %v; journal:\n%s", o.unit, p, s.journal(t))
			}
			if h := s.holders(t, o, port); len(h) != 0 {
				t.Errorf("after disable --now %s and a restart, %v still hold its socket", o.unit, h)
			}
			if resp, _ := s.get(t, "/"); resp.StatusCode != 200 {
				t.Errorf("GET / after turning %s off = %d, want 200", o.unit, resp.StatusCode)
			}
		})
	}
}

// TestSocketsEnableNowWhileStopped: while webapp.service is not running
// (after install, before the first connection), `systemctl enable --now`
// turns an optional socket on, and the first connection starts webapp
// with it.
func TestSocketsEnableNowWhileStopped(t *testing.T) {
	t.Parallel()
	o := optionalSockets[1] // grpc
	s := startService(t, serviceOptions{})
	port := s.addSocket(t, o)
	if p := s.show(t, "ActiveState"); p["ActiveState"] != "inactive" {
		t.Fatalf("before the first connection webapp.service is %v, want inactive", p)
	}
	s.box.Systemctl(t, "enable", "--now", o.unit)
	first := <-s.getAsync("/", 15*time.Second)
	s.requireServing(t, o, "systemctl enable --now "+o.unit+" and a first connection")
	if first.err != nil || first.status != 200 {
		t.Fatalf("the first GET / = %d %v, want 200", first.status, first.err)
	}
	if h, pid := s.holders(t, o, port), s.mainPID(t); !slices.Contains(h, pid) {
		t.Errorf("%v hold %s's socket, want webapp's MainPID %s among them", h, o.unit, pid)
	}
}
