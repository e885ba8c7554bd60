package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd/systemdtest"
)

func TestMain(m *testing.M) {
	systemdtest.Sweep("") // boxes left by killed runs
	code := m.Run()
	systemdtest.Sweep("")
	os.Exit(code)
}

var (
	buildMu    sync.Mutex
	buildDir   string
	builtPaths = map[string]string{}
)

// buildWebapp builds a static webapp that reports the given version (""
// means the VERSION file's), once per version and test run.
func buildWebapp(t testing.TB, version string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builtPaths[version]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("/var/tmp", "baton-e2e-build-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	name := "webapp"
	if version != "" {
		name += "-" + version
	}
	out := filepath.Join(buildDir, name)
	ldflags := "-s -w -buildid="
	if version != "" {
		ldflags += " -X main.version=" + version
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "../cmd/webapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build webapp: %v\n%s", err, b)
	}
	builtPaths[version] = out
	return out
}

// onEachSystemd runs f as one subtest per systemd the tests cover,
// named after it: systemd252 (the host's) and systemd257 (Debian 13's,
// booted from a root systemdtest.DebianRoot builds on first use).
func onEachSystemd(t *testing.T, f func(t *testing.T, sd systemdtest.Systemd)) {
	for _, sd := range systemdtest.Versions(t) {
		t.Run(sd.Name, func(t *testing.T) {
			sd.Require(t)
			f(t, sd)
		})
	}
}

// unit reads a shipped unit file.
func unit(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "systemd", "units", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// service is webapp installed from the shipped units in a booted box,
// its socket on a port of its own.
type service struct {
	box  *systemdtest.Box
	port int
	url  string
}

// serviceOptions adjust the installation.
type serviceOptions struct {
	// Systemd is the systemd to boot: the zero value is the host's.
	Systemd systemdtest.Systemd
	// Version of the binary (see buildWebapp).
	Version string
	// ServiceDropIn is extra [Service] text for a drop-in of webapp.service
	// (e.g. "WatchdogSec=2s" or "Environment=WEBAPP_OPTS=--drain-timeout=3s").
	ServiceDropIn string
	// NoStart leaves webapp.socket stopped.
	NoStart bool
}

// startService boots a box, installs /usr/bin/webapp and the shipped
// units with ListenStream= on a free port, and starts webapp.socket.
func startService(t *testing.T, opts serviceOptions) *service {
	t.Helper()
	box := systemdtest.Boot(t, systemdtest.Options{Root: opts.Systemd.Root})
	port := systemdtest.Port(t)
	s := &service{box: box, port: port, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	box.CopyFile(t, buildWebapp(t, opts.Version), "/usr/bin/webapp", 0o755)
	box.WriteFile(t, "/etc/systemd/system/webapp.socket", unit(t, "webapp.socket"), 0o644)
	box.WriteFile(t, "/etc/systemd/system/webapp.service", unit(t, "webapp.service"), 0o644)
	box.WriteFile(t, "/etc/systemd/system/webapp.socket.d/port.conf",
		[]byte(fmt.Sprintf("[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n", port)), 0o644)
	if opts.ServiceDropIn != "" {
		box.WriteFile(t, "/etc/systemd/system/webapp.service.d/test.conf",
			[]byte("[Service]\n"+opts.ServiceDropIn+"\n"), 0o644)
	}
	box.Systemctl(t, "daemon-reload")
	if !opts.NoStart {
		box.Systemctl(t, "start", "webapp.socket")
	}
	return s
}

// install replaces /usr/bin/webapp the way a package manager does.
func (s *service) install(t *testing.T, version string) {
	t.Helper()
	s.box.CopyFile(t, buildWebapp(t, version), "/usr/bin/webapp", 0o755)
}

// get sends one request on a new connection.
func (s *service) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(s.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp, string(b)
}

// show reads properties of webapp.service.
func (s *service) show(t *testing.T, props ...string) map[string]string {
	t.Helper()
	return s.box.Show(t, "webapp.service", props...)
}

// mainPID is webapp.service's MainPID as systemd sees it, in the box's
// pid namespace.
func (s *service) mainPID(t *testing.T) string {
	t.Helper()
	return s.show(t, "MainPID")["MainPID"]
}

// journal returns webapp.service's journal.
func (s *service) journal(t *testing.T, args ...string) string {
	t.Helper()
	return s.box.Journal(t, append([]string{"-u", "webapp.service", "-o", "cat"}, args...)...)
}

// journalWith returns webapp.service's journal (-o cat) once it holds
// every string of want, polling every 100 ms for at most 10 s: a line
// reaches the journal some time after its process wrote it. After 10 s it
// returns the journal as it is, for the caller's check to report.
func (s *service) journalWith(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j := s.journal(t)
		if missing(j, want...) == "" || time.Now().After(deadline) {
			return j
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// missing reports the first of want missing in s.
func missing(s string, want ...string) string {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return w
		}
	}
	return ""
}
