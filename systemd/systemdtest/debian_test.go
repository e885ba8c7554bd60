package systemdtest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseSystemdVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"systemd 252 (252.39-1~deb12u1)\n+PAM +AUDIT", "252", true},
		{"systemd 257 (257.13-1~deb13u1)\n", "257", true},
		{"systemd 257.13\n", "", false},
		{"udevadm 257\n", "", false},
		{"", "", false},
	} {
		got, ok := parseSystemdVersion(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseSystemdVersion(%q) = %q, %v, want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSystemdRequire(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Systemd{Name: "systemd257", err: errors.New("no mirror")}.Require(r)
	}()
	<-done
	if !strings.Contains(r.fatal, "no mirror") {
		t.Errorf("Require with CI=true and a root that failed to build: fatal %q, want the reason", r.fatal)
	}
	t.Setenv("CI", "")
	r = &recorder{TB: t}
	done = make(chan struct{})
	go func() {
		defer close(done)
		Systemd{Name: "systemd257", err: errors.New("no mirror")}.Require(r)
	}()
	<-done
	if !strings.Contains(r.skip, "no mirror") || r.fatal != "" {
		t.Errorf("Require off CI: skip %q fatal %q, want a skip with the reason", r.skip, r.fatal)
	}
}

func TestMirrorIn(t *testing.T) {
	const deb822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
`
	for _, tc := range []struct {
		name   string
		in     string
		deb822 bool
		want   string
	}{
		{"deb822", deb822, true, "http://deb.debian.org/debian"},
		{"security only", "Types: deb\nURIs: http://deb.debian.org/debian-security\n", true, ""},
		{"one-line", "# deb http://old/debian x main\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n", false, "http://mirror.example/debian"},
		{"other archive", "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n", false, ""},
	} {
		if got := mirrorIn(tc.in, tc.deb822); got != tc.want {
			t.Errorf("%s: mirrorIn(...) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestVersions boots every systemd the end-to-end tests use and checks
// that the box runs the version its name says, with socket activation of a
// Type=notify service working.
func TestVersions(t *testing.T) {
	for _, sd := range Versions(t) {
		t.Run(sd.Name, func(t *testing.T) {
			t.Parallel()
			sd.Require(t)
			b := Boot(t, Options{Root: sd.Root})
			if got := fmt.Sprintf("systemd%d", b.SystemdVersion()); got != sd.Name {
				t.Fatalf("box booted from root %q runs %s, want %s", sd.Root, got, sd.Name)
			}
			if sd.Root != "" {
				if got := strings.TrimSpace(string(b.ReadFile(t, "/etc/debian_version"))); !strings.HasPrefix(got, "13") {
					t.Errorf("/etc/debian_version in the box = %q, want 13.x", got)
				}
			}
			port := Port(t)
			installEcho(t, b, port)
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
			if err != nil {
				t.Fatalf("dial the box's socket from the host: %v", err)
			}
			pid := readEcho(t, conn)
			if got := b.Show(t, "sdt-echo.service", "MainPID")["MainPID"]; got != fmt.Sprint(pid) {
				t.Errorf("MainPID = %s, want %d", got, pid)
			}
		})
	}
}
