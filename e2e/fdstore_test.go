package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/internal/peerread"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// ownBindUnit is webapp.service without webapp.socket: webapp binds
// 127.0.0.1:port itself. A storeMax above 0 is FileDescriptorStoreMax=,
// which lets it give that socket (and at a stop its idle connections) to
// systemd's file descriptor store; flags are added to `webapp serve`.
func ownBindUnit(port, storeMax int, flags string) string {
	u := "[Unit]\nDescription=webapp binding its own socket\n[Service]\nType=notify\nNotifyAccess=all\n" +
		"RuntimeDirectory=webapp\nTimeoutStopSec=30s\nKillMode=control-group\n" +
		fmt.Sprintf("ExecStart=/usr/bin/webapp serve --listen 127.0.0.1:%d %s\n", port, flags)
	if storeMax > 0 {
		u += fmt.Sprintf("FileDescriptorStoreMax=%d\n", storeMax)
	}
	return u
}

// startOwnBind installs webapp-own.service (ownBindUnit) in a box of sd
// and starts it.
func startOwnBind(t *testing.T, sd systemdtest.Systemd, storeMax int, flags string) *service {
	t.Helper()
	box := systemdtest.Boot(t, systemdtest.Options{Root: sd.Root})
	port := systemdtest.Port(t)
	s := &service{box: box, port: port, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	box.CopyFile(t, buildWebapp(t, ""), "/usr/bin/webapp", 0o755)
	box.WriteFile(t, "/etc/systemd/system/webapp-own.service", []byte(ownBindUnit(port, storeMax, flags)), 0o644)
	box.Systemctl(t, "daemon-reload")
	box.Systemctl(t, "start", "webapp-own.service")
	s.get(t, "/")
	return s
}

// TestFDStoreRestart: webapp without a .socket unit binds its address
// once and gives the socket to systemd's file descriptor store; every
// `systemctl restart` then hands the same socket to the next start, so 10
// restarts under 32-client load refuse nothing. On systemd 257 $FDSTORE
// turns the store on by itself; 252 does not set it, so the unit passes
// --fd-store. The contrast, the same unit without the store, refuses
// connections at every restart.
func TestFDStoreRestart(t *testing.T) { onEachSystemd(t, testFDStoreRestart) }

func testFDStoreRestart(t *testing.T, sd systemdtest.Systemd) {
	flags := "--fd-store"
	if sd.Name != "systemd252" {
		flags = "" // $FDSTORE (systemd 254 and later) is enough
	}
	// New connections are what a closed socket refuses; keep-alive
	// clients (measured once: 0 failed of about 530,000 requests over 10
	// restarts on each version) add nothing to that and a minute to the
	// suite.
	for _, mode := range []load.Mode{load.NewConnection} {
		t.Run("store/"+mode.String(), func(t *testing.T) {
			const restarts = 10
			s := startOwnBind(t, sd, 4, flags)
			// Sent before READY=1, so in the store once the start is done.
			if n := s.box.Show(t, "webapp-own.service", "NFileDescriptorStore")["NFileDescriptorStore"]; n != "1" {
				t.Fatalf("%s: NFileDescriptorStore=%s after the first start, want 1; journal:\n%s", sd.Name, n, s.box.Journal(t, "-u", "webapp-own.service", "-o", "cat"))
			}
			gens := []string{s.box.Show(t, "webapp-own.service", "MainPID")["MainPID"]}
			res := restartUnderLoad(t, s, "webapp-own.service", mode, restarts, nil)
			if res.Failed() != 0 || res.Aborted != 0 {
				t.Errorf("%s: restart webapp-own.service ×%d under load (%s) with the fd store: %d failed (%+v), %d aborted, want 0\n%s",
					sd.Name, restarts, mode, res.Failed(), res.Failures, res.Aborted, res)
			}
			p := s.box.Show(t, "webapp-own.service", "ActiveState", "NFileDescriptorStore", "MainPID", "NRestarts")
			if p["ActiveState"] != "active" || p["NFileDescriptorStore"] != "1" || p["MainPID"] == gens[0] {
				t.Errorf("%s: after the restarts webapp-own.service is %v, want active, NFileDescriptorStore=1, a new MainPID (was %s)", sd.Name, p, gens[0])
			}
			// The last generation took the stored socket by name.
			j := s.box.Journal(t, "-u", "webapp-own.service", "-o", "cat")
			if n := strings.Count(j, "(systemd), pid"); n < restarts {
				t.Errorf("%s: %d generations said they serve a socket from systemd, want at least %d (one per restart); journal:\n%s", sd.Name, n, restarts, j)
			}
			if bad := killedBySystemd(j); len(bad) > 0 {
				t.Errorf("systemd had to end a stop: %q", bad)
			}
			t.Logf("%s, fd store, %s: %d restarts, %d requests, %d failed (refused %d)", sd.Name, mode, restarts, res.Requests, res.Failed(), res.Failures.Refused)
		})
	}
	t.Run("contrast/no-store", func(t *testing.T) {
		const restarts = 5
		s := startOwnBind(t, sd, 0, "")
		res := restartUnderLoad(t, s, "webapp-own.service", load.NewConnection, restarts, nil)
		if res.Failures.Refused == 0 {
			t.Errorf("%s: without the fd store %d restarts under load refused no connection (%d failed %+v): the contrast shows nothing", sd.Name, restarts, res.Failed(), res.Failures)
		}
		t.Logf("%s, no fd store: %d restarts, %d requests, %d failed (refused %d) %+v", sd.Name, restarts, res.Requests, res.Failed(), res.Failures.Refused, res.Failures)
	})
}

// TestFDStoreAddressChange: with --fd-store, a restart after the address
// was changed gets the old socket back from the store; webapp removes it
// from the store (FDSTOREREMOVE=1) and fails that start with the reason,
// and the automatic restart binds and stores the new address.
func TestFDStoreAddressChange(t *testing.T) { onEachSystemd(t, testFDStoreAddressChange) }

func testFDStoreAddressChange(t *testing.T, sd systemdtest.Systemd) {
	t.Parallel()
	s := startOwnBind(t, sd, 4, "--fd-store")
	newPort := systemdtest.Port(t)
	s.box.WriteFile(t, "/etc/systemd/system/webapp-own.service.d/move.conf", []byte(fmt.Sprintf(
		"[Service]\nRestart=on-failure\nRestartSec=200ms\nExecStart=\nExecStart=/usr/bin/webapp serve --listen 127.0.0.1:%d --fd-store\n", newPort)), 0o644)
	s.box.Systemctl(t, "daemon-reload")
	_, stderr, err := s.box.Exec(context.Background(), "systemctl", "restart", "webapp-own.service")
	t.Logf("systemctl restart after moving --listen: %v %s", err, strings.TrimSpace(stderr))
	moved := &service{box: s.box, port: newPort, url: fmt.Sprintf("http://127.0.0.1:%d", newPort)}
	waitFor(t, 20*time.Second, "webapp to serve the new address", func() (bool, string) {
		p := s.box.Show(t, "webapp-own.service", "ActiveState", "NFileDescriptorStore", "NRestarts")
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(moved.url + "/")
		if err != nil {
			return false, fmt.Sprintf("%v; %v", p, err)
		}
		resp.Body.Close()
		return p["ActiveState"] == "active" && p["NFileDescriptorStore"] == "1", fmt.Sprint(p)
	})
	j := s.box.Journal(t, "-u", "webapp-own.service", "-o", "cat")
	if !strings.Contains(j, "removed it from the store") {
		t.Errorf("%s: the journal does not say the stale socket was removed from the store:\n%s", sd.Name, j)
	}
	c := &http.Client{Timeout: 2 * time.Second}
	if resp, err := c.Get(s.url + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("%s: the old address %s still answers after the move", sd.Name, s.url)
	}
	t.Logf("%s: %v", sd.Name, s.box.Show(t, "webapp-own.service", "ActiveState", "NFileDescriptorStore", "NRestarts", "Result"))
}

// TestFDStoreKeepsConnections: with the file descriptor store, a stop
// puts the idle kept-alive connections in it instead of closing them, and
// the next start goes on serving them: across `systemctl restart`, 100
// clients keep their TCP connection (the same client port, the client's
// own connection object) and their next answer comes from the new main
// process without "Connection: close"; a request in flight at the restart
// is answered, and its connection goes on too. The new start removes the
// connections from the store, which holds only the socket afterwards. The
// contrast, --conn-handover=false, closes every one of them.
func TestFDStoreKeepsConnections(t *testing.T) { onEachSystemd(t, testFDStoreKeepsConnections) }

func testFDStoreKeepsConnections(t *testing.T, sd systemdtest.Systemd) {
	// systemd 252 does not pass $FDSTORE: webapp is told the store's size.
	flags := "--fd-store --fd-store-max=512"
	if sd.Name != "systemd252" {
		flags = "" // $FDSTORE (systemd 254 and later) is enough
	}
	for _, tc := range []struct {
		name  string
		flags string
		kept  bool
	}{
		{"store", flags, true},
		{"contrast/conn-handover=false", flags + " --conn-handover=false", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startOwnBind(t, sd, 512, tc.flags)
			unit := "webapp-own.service"
			old := s.box.Show(t, unit, "MainPID")["MainPID"]
			const n = 100
			conns := make([]*rawConn, n)
			ports := make([]string, n)
			for i := range conns {
				conns[i] = s.dialRaw(t)
				resp, err := conns[i].get("/", 10*time.Second)
				if err != nil || resp.Header.Get("X-Webapp-Pid") != old {
					t.Fatalf("connection %d: %v, %v; want an answer from pid %s", i, resp, err, old)
				}
				ports[i] = conns[i].c.LocalAddr().String()
			}
			// A request under way at the restart: webapp has read it
			// before the restart begins (on a slow machine it may be done
			// by the time the stop begins: then it is one more idle
			// connection, which goes to the store all the same).
			busy := s.dialRaw(t)
			busyPort := busy.c.LocalAddr().String()
			slow := make(chan error, 1)
			go func() {
				resp, err := busy.get("/slow?ms=1500", 20*time.Second)
				// Without the hand-over it is answered with
				// "Connection: close", as at any drain.
				if err == nil && (resp.StatusCode != 200 || resp.Close == tc.kept) {
					err = fmt.Errorf("%s, Connection: close %v", resp.Status, resp.Close)
				}
				slow <- err
			}()
			if err := peerread.Wait(busy.c, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			cursor, err := s.journalCursor(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			s.box.Systemctl(t, "restart", unit)
			if err := <-slow; err != nil {
				t.Errorf("%s: the request under way at the restart: %v, want 200 (without Connection: close only with the hand-over)", sd.Name, err)
			}
			next := s.box.Show(t, unit, "MainPID")["MainPID"]
			if next == old {
				t.Fatalf("%s: MainPID stayed %s after the restart", sd.Name, old)
			}
			outcome, _ := goOn(append(conns, busy), append(ports, busyPort), next)
			if !tc.kept {
				if outcome["failed"] != n+1 {
					t.Errorf("%s: without the hand-over, after the restart: %v, want all %d closed (the contrast)", sd.Name, outcome, n+1)
				}
				t.Logf("%s, --conn-handover=false: after the restart %v", sd.Name, outcome)
				return
			}
			if outcome["went on"] != n+1 || len(outcome) != 1 {
				t.Errorf("%s: after the restart: %v, want all %d answered by pid %s on their connection", sd.Name, outcome, n+1, next)
			}
			took := fmt.Sprintf("took %d connections back from systemd's file descriptor store", n+1)
			j, ok, err := s.waitJournalAfter(context.Background(), cursor, 15*time.Second, []string{"-u", unit}, func(j string) bool {
				return strings.Contains(j, took) && strings.Contains(j, "kept in systemd's file descriptor store")
			})
			if err != nil || !ok {
				t.Errorf("%s: after 15 s the journal does not say the stop stored and the new start took back the %d connections (%v):\n%s", sd.Name, n+1, err, j)
			}
			// Removed from the store once taken: only the socket is left.
			waitFor(t, 10*time.Second, "the store to hold only the socket", func() (bool, string) {
				p := s.box.Show(t, unit, "NFileDescriptorStore")
				return p["NFileDescriptorStore"] == "1", fmt.Sprint(p)
			})
			if bad := killedBySystemd(j); len(bad) > 0 {
				t.Errorf("systemd had to end a stop: %q", bad)
			}
			t.Logf("%s: after the restart %v; %s", sd.Name, outcome, lastLine(j, "kept in systemd's file descriptor store"))
		})
	}
}
