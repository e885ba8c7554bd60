package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// Package versions of the package tests: v1 is installed first, v2 is the
// upgrade (and v1 again the downgrade).
const (
	pkgV1 = "0.1.0"
	pkgV2 = "0.2.0"
)

// needTool returns the path of a host tool a package test needs. A missing
// tool fails the test under CI=true and skips it otherwise.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s is not installed (CI=true): `make deps` as root installs it", name)
	}
	t.Skipf("%s is not installed: run `make deps` as root", name)
	return ""
}

// buildPackage runs `make <format> VERSION=<version> DIST=<temp dir>` at the
// top of the repository and returns the one package file it built.
func buildPackage(t *testing.T, format, version string) string {
	t.Helper()
	needTool(t, "make")
	dist, err := os.MkdirTemp("/var/tmp", "baton-e2e-pkg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dist) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-C", "..", "--no-print-directory", format,
		"VERSION="+version, "DIST="+dist)
	cmd.Env = append(os.Environ(), "TMPDIR=/var/tmp")
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s VERSION=%s: %v\n%s", format, version, err, out)
	}
	files, err := filepath.Glob(filepath.Join(dist, "*."+format))
	if err != nil || len(files) != 1 {
		t.Fatalf("make %s VERSION=%s built %v (%v), want one .%s", format, version, files, err, format)
	}
	return files[0]
}

// pkgBox is a booted box in which webapp is installed from its packages.
// webapp.socket listens on a port of its own: a drop-in written before the
// first install moves ListenStream=, so the postinst of a fresh install
// starts the socket there.
type pkgBox struct {
	box  *systemdtest.Box
	port int
	url  string
	// files maps a host package file to its path in the box.
	files map[string]string
}

func bootPackageBox(t *testing.T, sd systemdtest.Systemd) *pkgBox {
	t.Helper()
	box := systemdtest.Boot(t, systemdtest.Options{Root: sd.Root})
	port := systemdtest.Port(t)
	p := &pkgBox{box: box, port: port, url: fmt.Sprintf("http://127.0.0.1:%d/", port), files: map[string]string{}}
	// The box's root is the host's: files of webapp the host has (an
	// unpackaged copy, say) would show through and meet the package.
	var stray []string
	for _, f := range packagedPaths {
		if p.exists(t, f) {
			stray = append(stray, f)
		}
	}
	if len(stray) > 0 {
		t.Logf("removing in the box what the host has of webapp outside any package: %v", stray)
		p.run(t, append([]string{"rm", "-rf", "--"}, stray...)...)
	}
	// dpkg's man-db trigger rebuilds the index of every manual page the
	// host has, for tens of seconds under load: it is not what is tested.
	p.run(t, "rm", "-f", "/var/lib/man-db/auto-update")
	box.WriteFile(t, "/etc/systemd/system/webapp.socket.d/port.conf",
		[]byte(fmt.Sprintf("[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n", port)), 0o644)
	box.Systemctl(t, "daemon-reload")
	return p
}

// packagedPaths are the files and directories the packages install.
var packagedPaths = []string{
	"/usr/bin/webapp",
	"/usr/lib/systemd/system/webapp.socket",
	"/usr/lib/systemd/system/webapp.service",
	"/usr/lib/systemd/system/webapp-https.socket",
	"/usr/lib/systemd/system/webapp-grpc.socket",
	"/usr/lib/systemd/system/webapp-metrics.socket",
	"/usr/lib/systemd/system/webapp-udp.socket",
	"/etc/webapp",
	"/etc/default/webapp",
	"/etc/sysconfig/webapp",
	"/usr/share/man/man1/webapp.1.gz",
	"/usr/share/doc/webapp",
	"/usr/share/licenses/webapp",
	"/usr/share/lintian/overrides/webapp",
}

// webappUnits are the units the packages install.
var webappUnits = []string{"webapp.socket", "webapp-https.socket", "webapp-grpc.socket", "webapp-udp.socket", "webapp-metrics.socket", "webapp.service"}

// optionalOff checks that the optional sockets are shipped disabled and
// stay off: neither enabled nor started by the package or by webapp.service.
func (p *pkgBox) optionalOff(t *testing.T, when string) {
	t.Helper()
	for _, o := range optionalSockets {
		st := p.box.Show(t, o.unit, "ActiveState", "UnitFileState", "LoadState")
		if st["LoadState"] != "loaded" || st["UnitFileState"] != "disabled" || st["ActiveState"] != "inactive" {
			t.Errorf("%s: %s is %v, want loaded, disabled and inactive", when, o.unit, st)
		}
	}
}

// copyPackage copies a package file into the box's /root and returns its
// path there.
func (p *pkgBox) copyPackage(t *testing.T, hostPath string) string {
	t.Helper()
	if in, ok := p.files[hostPath]; ok {
		return in
	}
	in := path.Join("/root", filepath.Base(hostPath))
	p.box.CopyFile(t, hostPath, in, 0o644)
	p.files[hostPath] = in
	return in
}

// run runs a command in the box and fails the test, with its output and
// webapp's journal, if it fails. It returns stdout and stderr together.
func (p *pkgBox) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stdout, stderr, err := p.box.Exec(ctx, args...)
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s\njournal:\n%s", strings.Join(args, " "), err, stdout, stderr, p.journal(t))
	}
	return stdout + stderr
}

// try runs a command in the box and returns its exit code and output.
func (p *pkgBox) try(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stdout, stderr, err := p.box.Exec(ctx, args...)
	if err == nil {
		return 0, stdout + stderr
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stdout + stderr
	}
	t.Fatalf("%s: %v", strings.Join(args, " "), err)
	return -1, ""
}

// journal is the journal of both units, for failure messages.
func (p *pkgBox) journal(t *testing.T) string {
	t.Helper()
	return p.box.Journal(t, "-u", "webapp.socket", "-u", "webapp.service", "-o", "short-monotonic", "--no-hostname")
}

// exists reports whether a path exists in the box (a dangling symlink
// exists).
func (p *pkgBox) exists(t *testing.T, name string) bool {
	t.Helper()
	_, err := os.Lstat(filepath.Join(p.box.Root(), name))
	return err == nil
}

// get sends one request on a new connection and returns the answering
// version and PID.
func (p *pkgBox) get(t *testing.T) (version, pid string) {
	t.Helper()
	res, err := load.Run(context.Background(), p.url, load.Options{Clients: 1, Mode: load.NewConnection, MaxRequests: 1, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatalf("GET %s: %v", p.url, err)
	}
	if res.OK != 1 {
		t.Fatalf("GET %s failed:\n%s\njournal:\n%s", p.url, res, p.journal(t))
	}
	for v := range res.Versions {
		version = v
	}
	for pid = range res.PIDs {
	}
	return version, pid
}

// refused reports whether a connection to the socket's port is refused.
func (p *pkgBox) refused(t *testing.T) bool {
	t.Helper()
	res, err := load.Run(context.Background(), p.url, load.Options{Clients: 1, Mode: load.NewConnection, MaxRequests: 1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res.Failures.Refused == 1
}

// state is what a reload must keep (everything but MainPID) and change
// (MainPID).
type state struct {
	socket  map[string]string // webapp.socket
	service map[string]string // webapp.service
}

var (
	socketProps  = []string{"ActiveState", "SubState", "ActiveEnterTimestamp", "InvocationID", "UnitFileState", "NRefused"}
	serviceProps = []string{"ActiveState", "SubState", "MainPID", "NRestarts", "InvocationID", "ActiveEnterTimestamp", "Result"}
)

func (p *pkgBox) state(t *testing.T) state {
	t.Helper()
	return state{
		socket:  p.box.Show(t, "webapp.socket", socketProps...),
		service: p.box.Show(t, "webapp.service", serviceProps...),
	}
}

// cmdline is webapp's main process's command line, NUL-separated
// arguments joined with spaces.
func (p *pkgBox) cmdline(t *testing.T, pid string) string {
	t.Helper()
	b := p.box.ReadFile(t, "/proc/"+pid+"/cmdline")
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// changeUnderLoad runs a package transaction (cmd, inside the box) as the
// scheduled disruption of a load of 32 clients in the given mode, and checks
// that it was a zero-failure reload from version from to version to: no
// failed request, answers from both versions, a new MainPID that answers
// with version to, and neither unit restarted (same InvocationID and
// ActiveEnterTimestamp, NRestarts=0).
func (p *pkgBox) changeUnderLoad(t *testing.T, mode load.Mode, from, to string, cmd ...string) {
	t.Helper()
	before := p.state(t)
	if before.service["ActiveState"] != "active" || before.socket["ActiveState"] != "active" {
		t.Fatalf("before %s: webapp.service %v, webapp.socket %v; want both active", strings.Join(cmd, " "), before.service, before.socket)
	}
	var txOut string
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := load.Run(ctx, p.url, load.Options{
		Clients:  32,
		Mode:     mode,
		Duration: 2 * time.Minute,
		// Long enough for the old generation to close its kept-alive
		// connections (--idle-grace) while the load still runs.
		Tail: 4 * time.Second,
		Schedule: load.Schedule{Start: time.Second, Count: 1, Run: func(ctx context.Context, _ int) error {
			stdout, stderr, err := p.box.Exec(ctx, cmd...)
			txOut = stdout + stderr
			return err
		}},
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	after := p.state(t)
	verdict := func() string {
		return fmt.Sprintf("%s (%s):\n%s\n%s output:\n%s\nbefore: %v %v\nafter:  %v %v\njournal:\n%s",
			strings.Join(cmd, " "), mode, res, cmd[0], txOut, before.socket, before.service, after.socket, after.service, p.journal(t))
	}
	if len(res.Events) != 1 || res.Events[0].Err != nil {
		t.Fatalf("the package transaction failed: %v\n%s", res.Events, verdict())
	}
	ev := res.Events[0]
	t.Logf("%s under %d %s clients: %d requests in %v (%.0f/s), %d failed %+v, versions %v, pids %v; transaction %v, its window: %d requests, worst added latency %v",
		strings.Join(cmd, " "), res.Clients, mode, res.Requests, res.Elapsed.Round(time.Millisecond), res.RPS,
		res.Failures.Total(), res.Failures, res.Versions, res.PIDs, ev.Duration.Round(time.Millisecond),
		ev.Window.Requests, ev.Window.WorstAdded.Round(time.Millisecond))
	t.Logf("%s: %s", strings.Join(cmd, " "), strings.TrimSpace(txOut))
	if n := res.Failures.Total(); n != 0 {
		t.Errorf("%d failed requests during %s, want 0; details %+v", n, verdict(), res.FailureDetails)
	}
	if res.Versions[from] == 0 || res.Versions[to] == 0 {
		t.Errorf("answers by version %v, want answers from both %s and %s", res.Versions, from, to)
	}
	version, pid := p.get(t)
	if version != to {
		t.Errorf("after the transaction the answer comes from version %q, want %s", version, to)
	}
	if after.service["MainPID"] == before.service["MainPID"] || after.service["MainPID"] != pid {
		t.Errorf("MainPID %s -> %s, answer from pid %s; want a new MainPID that answers", before.service["MainPID"], after.service["MainPID"], pid)
	}
	for _, k := range []string{"InvocationID", "ActiveEnterTimestamp", "ActiveState"} {
		if before.service[k] != after.service[k] {
			t.Errorf("webapp.service %s %q -> %q: restarted, not reloaded", k, before.service[k], after.service[k])
		}
	}
	if after.service["NRestarts"] != "0" {
		t.Errorf("webapp.service NRestarts=%s, want 0", after.service["NRestarts"])
	}
	for _, k := range []string{"InvocationID", "ActiveEnterTimestamp", "SubState", "UnitFileState"} {
		if before.socket[k] != after.socket[k] {
			t.Errorf("webapp.socket %s %q -> %q: the socket must not be restarted", k, before.socket[k], after.socket[k])
		}
	}
	if t.Failed() {
		t.Logf("%s", verdict())
	}
}

// leftovers lists the files under dirs in the box whose names mention
// webapp, except the test's own drop-in directory.
func (p *pkgBox) leftovers(t *testing.T, dirs ...string) []string {
	t.Helper()
	var found []string
	for _, d := range dirs {
		root := filepath.Join(p.box.Root(), d)
		filepath.WalkDir(root, func(name string, e os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			rel := "/" + strings.TrimPrefix(strings.TrimPrefix(name, p.box.Root()), "/")
			if strings.HasPrefix(rel, "/etc/systemd/system/webapp.socket.d") {
				return nil
			}
			if strings.Contains(e.Name(), "webapp") {
				found = append(found, rel)
			}
			return nil
		})
	}
	slices.Sort(found)
	return found
}
