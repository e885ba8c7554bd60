package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// goodClient is where the reload tests keep a good build inside the box: a
// stand-in /usr/bin/webapp script execs it for `webapp reload`, so that a
// broken server still has a working reload client.
const goodClient = "/usr/local/lib/webapp-e2e/webapp"

// failReload installs a /usr/bin/webapp that exits at once (its reload
// command is goodClient, installed by the caller), checks that `systemctl
// reload` fails with it, and puts the good binary back.
func (s *service) failReload(t *testing.T, good string) {
	t.Helper()
	s.box.Run(t, "sh", "-c", `printf '%s\n' '#!/bin/sh' 'case "$1" in reload) exec `+goodClient+` "$@";; esac' 'exit 3' >/usr/bin/.webapp.new &&
chmod 755 /usr/bin/.webapp.new && mv -f /usr/bin/.webapp.new /usr/bin/webapp`)
	if _, _, err := s.box.Exec(t.Context(), "systemctl", "reload", "webapp.service"); err == nil {
		t.Fatal("systemctl reload with a binary that exits at once succeeded")
	}
	if err := s.swapBinary(good); err != nil {
		t.Fatal(err)
	}
}

// reloadOutcome is one `systemctl reload webapp.service`.
type reloadOutcome struct {
	Took   time.Duration
	Output string // stdout and stderr
	Err    error
}

// reload runs `systemctl reload webapp.service`; it never fails the test,
// so it may run outside the test's goroutine.
func (s *service) reload(ctx context.Context) reloadOutcome {
	start := time.Now()
	out, stderr, err := s.box.Exec(ctx, "systemctl", "reload", "webapp.service")
	return reloadOutcome{Took: time.Since(start), Output: strings.TrimSpace(out + stderr), Err: err}
}

// showCtx is show without the test: for use outside the test's goroutine.
func (s *service) showCtx(ctx context.Context, props ...string) (map[string]string, error) {
	args := []string{"systemctl", "show"}
	for _, p := range props {
		args = append(args, "--property="+p)
	}
	out, _, err := s.box.Exec(ctx, append(args, "--", "webapp.service")...)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// swapBinary installs the host file src as /usr/bin/webapp in the box the
// way a package manager does (a new file renamed over the old one); it
// never fails the test, so it may run outside the test's goroutine.
func (s *service) swapBinary(src string) error {
	dir := filepath.Join(s.box.Root(), "usr", "bin")
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".webapp.new-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, "webapp"))
}

// cgProc is a process in webapp.service's cgroup, as the box sees it.
type cgProc struct {
	PID   string
	State string // R, S, Z, ...
	Cmd   string
}

func (p cgProc) String() string { return p.PID + " " + p.State + " " + p.Cmd }

// procs lists the processes in webapp.service's cgroup.
func (s *service) procs(t *testing.T) []cgProc {
	t.Helper()
	ps, err := s.procsCtx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// procsCtx is procs without the test.
func (s *service) procsCtx(ctx context.Context) ([]cgProc, error) {
	p, err := s.showCtx(ctx, "ControlGroup")
	if err != nil || p["ControlGroup"] == "" {
		return nil, err
	}
	out, _, err := s.box.Exec(ctx, "sh", "-c", `f=/sys/fs/cgroup"$1"/cgroup.procs
[ -e "$f" ] || exit 0
for p in $(cat "$f"); do
	st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/$p/status 2>/dev/null)
	cmd=$(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null)
	echo "$p ${st:-?} $cmd"
done`, "sh", p["ControlGroup"])
	if err != nil {
		return nil, err
	}
	var ps []cgProc
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			continue
		}
		p := cgProc{PID: f[0], State: f[1]}
		if len(f) == 3 {
			p.Cmd = strings.TrimSpace(f[2])
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// live drops zombies (reaped late by the box's PID 1) and processes gone
// while listed.
func liveOnly(ps []cgProc) []cgProc {
	return slices.DeleteFunc(slices.Clone(ps), func(p cgProc) bool { return p.State == "Z" || p.State == "?" })
}

// waitOnlyMain waits until the only live process in the service's cgroup
// is its MainPID, and returns the processes seen last.
func (s *service) waitOnlyMain(t *testing.T, within time.Duration) ([]cgProc, bool) {
	t.Helper()
	ps, err := s.waitOnlyMainCtx(context.Background(), within)
	if err != nil {
		t.Fatal(err)
	}
	return ps, len(ps) == 1
}

// waitOnlyMainCtx is waitOnlyMain without the test; it returns the live
// processes seen last and an error if there was not exactly MainPID.
func (s *service) waitOnlyMainCtx(ctx context.Context, within time.Duration) ([]cgProc, error) {
	deadline := time.Now().Add(within)
	for {
		p, err := s.showCtx(ctx, "MainPID")
		if err != nil {
			return nil, err
		}
		ps, err := s.procsCtx(ctx)
		if err != nil {
			return nil, err
		}
		ps = liveOnly(ps)
		if len(ps) == 1 && ps[0].PID == p["MainPID"] {
			return ps, nil
		}
		if time.Now().After(deadline) {
			return ps, fmt.Errorf("after %v the service's cgroup holds %v, want only MainPID %s", within, ps, p["MainPID"])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// installScript installs a shell script as /usr/bin/webapp.
func (s *service) installScript(t *testing.T, body string) {
	t.Helper()
	s.box.WriteFile(t, "/usr/bin/webapp", []byte("#!/bin/sh\n"+body+"\n"), 0o755)
}

// freshAnswer is the answer to one request sent outside the load.
type freshAnswer struct {
	Status  int
	PID     string
	Version string
	Body    string
	Took    time.Duration
	Err     error
}

// getFresh sends one GET on a new connection; it never fails the test.
func getFresh(ctx context.Context, url string) freshAnswer {
	return getFreshFrom(ctx, url, nil)
}

// getFreshFrom is getFresh that calls dialed, if not nil, once the
// connection is made with its local port (0 if the dial failed).
func getFreshFrom(ctx context.Context, url string, dialed func(port int)) freshAnswer {
	tr := &http.Transport{DisableKeepAlives: true}
	if dialed != nil {
		r := &portReporter{dialed: dialed}
		defer r.done()
		tr.DialContext = r.dial
	}
	c := &http.Client{Transport: tr}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return freshAnswer{Err: err}
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return freshAnswer{Err: err, Took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return freshAnswer{
		Status:  resp.StatusCode,
		PID:     resp.Header.Get(load.PIDHeader),
		Version: resp.Header.Get(load.VersionHeader),
		Body:    string(b),
		Took:    time.Since(start),
		Err:     err,
	}
}

// slowOK checks an answer to /slow?ms=N.
func slowOK(a freshAnswer, ms int) error {
	want := fmt.Sprintf("slept %d ms\n", ms)
	switch {
	case a.Err != nil:
		return a.Err
	case a.Status != http.StatusOK || a.Body != want:
		return fmt.Errorf("status %d, body %q; want 200 %q", a.Status, a.Body, want)
	}
	return nil
}

// percentile is the nearest-rank p-th percentile of sorted.
func nearestRank(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i, 1)-1]
}

// durations summarises d as "p50 X, max Y".
func p50Max(d []time.Duration) (p50, maxD time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0, 0
	}
	return nearestRank(s, 50), s[len(s)-1]
}

// aroundEvents is the p99 latency of the successful requests that started
// within some event's window (±Margin around each disruption).
func aroundEvents(res *load.Result) (n int, p99 time.Duration) {
	var lat []time.Duration
	for _, smp := range res.Samples {
		if smp.Class != load.ClassOK {
			continue
		}
		for _, ev := range res.Events {
			if smp.Start >= ev.Window.From && smp.Start <= ev.Window.To {
				lat = append(lat, smp.Latency)
				break
			}
		}
	}
	slices.Sort(lat)
	return len(lat), nearestRank(lat, 99)
}

// failures describes the failed requests of res, for a test message.
func describeFailures(res *load.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d failed of %d: %+v", res.Failed(), res.Requests, res.Failures)
	for i, f := range res.FailureDetails {
		if i == 20 {
			fmt.Fprintf(&b, "\n  ... %d more", len(res.FailureDetails)-i)
			break
		}
		fmt.Fprintf(&b, "\n  at %v (+%v) %s client %d conn request %d written %v: %s",
			f.Offset.Round(time.Millisecond), f.Latency.Round(time.Millisecond), f.Class, f.Client, f.ConnRequest, f.Written, f.Error)
	}
	return b.String()
}

// procStatus reads the open fd count and VmRSS (kB) of pid in the box.
func (s *service) procStatus(t *testing.T, pid string) (fds, rssKB int) {
	t.Helper()
	out := s.box.Run(t, "sh", "-c", `ls /proc/$1/fd | wc -l; sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' /proc/$1/status`, "sh", pid)
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("fd count and VmRSS of pid %s: got %q", pid, out)
	}
	fds, err1 := strconv.Atoi(f[0])
	rssKB, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		t.Fatalf("fd count and VmRSS of pid %s: got %q", pid, out)
	}
	return fds, rssKB
}

// zombies lists the processes in state Z anywhere in the box.
func (s *service) zombies(t *testing.T) []string {
	t.Helper()
	out := s.box.Run(t, "ps", "-eo", "pid=,stat=,comm=")
	var z []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasPrefix(f[1], "Z") {
			z = append(z, strings.Join(f, " "))
		}
	}
	return z
}

// journalCtx returns webapp.service's journal (-o cat) without the test.
func (s *service) journalCtx(ctx context.Context) (string, error) {
	_, _, _ = s.box.Exec(ctx, "journalctl", "--sync")
	out, _, err := s.box.Exec(ctx, "journalctl", "--no-pager", "-u", "webapp.service", "-o", "cat")
	return out, err
}

// exitStatus is the exit code of a failed command, or what failed instead.
func exitStatus(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "0"
	case errors.As(err, &ee):
		return strconv.Itoa(ee.ExitCode())
	}
	return err.Error()
}

// lastLine is the last line of s that contains sub.
func lastLine(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}

// firstLine is the first line of s.
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// journalCursor is the cursor of the last entry in the box's journal:
// journalAfter returns what came after it.
func (s *service) journalCursor(ctx context.Context) (string, error) {
	_, _, _ = s.box.Exec(ctx, "journalctl", "--sync")
	out, _, err := s.box.Exec(ctx, "journalctl", "--no-pager", "-n", "1", "--show-cursor", "-o", "cat")
	if err != nil {
		return "", err
	}
	const mark = "-- cursor: "
	i := strings.LastIndex(out, mark)
	if i < 0 {
		return "", fmt.Errorf("journalctl --show-cursor printed no cursor: %q", out)
	}
	return strings.TrimSpace(out[i+len(mark):]), nil
}

// journalAfter returns the box's journal (-o cat) after cursor, of the
// entries that match (journalctl matches such as "-u", "webapp.service";
// none: all).
func (s *service) journalAfter(ctx context.Context, cursor string, match ...string) (string, error) {
	_, _, _ = s.box.Exec(ctx, "journalctl", "--sync")
	out, _, err := s.box.Exec(ctx, append([]string{"journalctl", "--no-pager", "-o", "cat", "--after-cursor=" + cursor}, match...)...)
	return out, err
}

// waitJournalAfter polls the box's journal after cursor, of the entries that
// match, every 100 ms until cond holds for it or within passes (lines
// written by a process reach the journal some time after the process
// wrote them). It returns the journal seen last and whether cond held.
func (s *service) waitJournalAfter(ctx context.Context, cursor string, within time.Duration, match []string, cond func(journal string) bool) (string, bool, error) {
	deadline := time.Now().Add(within)
	for {
		j, err := s.journalAfter(ctx, cursor, match...)
		if err != nil {
			return j, false, err
		}
		if cond(j) {
			return j, true, nil
		}
		if time.Now().After(deadline) {
			return j, false, nil
		}
		select {
		case <-ctx.Done():
			return j, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitLinesAfter is waitJournalAfter over the whole journal until every
// string of want appears. Not only webapp.service's entries: the line of
// a child of systemd that failed to exec it may lack _SYSTEMD_UNIT (the
// child is gone before journald looks up its cgroup), so `-u` misses it.
func (s *service) waitLinesAfter(ctx context.Context, cursor string, within time.Duration, want ...string) (string, error) {
	j, _, err := s.waitJournalAfter(ctx, cursor, within, nil, func(j string) bool { return missing(j, want...) == "" })
	return j, err
}

// portReporter is a dial function for an http.Transport that tells
// dialed the local port of its first connection, or 0 at done if it made
// none.
type portReporter struct {
	once   sync.Once
	dialed func(port int)
}

func (r *portReporter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
			r.once.Do(func() { r.dialed(a.Port) })
		}
	}
	return c, err
}

func (r *portReporter) done() { r.once.Do(func() { r.dialed(0) }) }

// waitAccepted polls every 100 ms until the connections from the local
// ports clientPorts to the service's port are each held by process pid
// (any process if pid is ""): accepted by that generation rather than
// waiting in the socket's backlog. It fails after within.
func (s *service) waitAccepted(ctx context.Context, within time.Duration, pid string, clientPorts ...int) error {
	deadline := time.Now().Add(within)
	for {
		held := 0
		var saw []string
		for _, cp := range clientPorts {
			if cp == 0 {
				return errors.New("waitAccepted: a connection was not made")
			}
			out, _, err := s.box.Exec(ctx, "ss", "-tnpH", "state", "established",
				fmt.Sprintf("( sport = :%d and dport = :%d )", s.port, cp))
			if err != nil {
				return err
			}
			out = strings.TrimSpace(out)
			saw = append(saw, out)
			if pid == "" && strings.Contains(out, "pid=") || pid != "" && strings.Contains(out, "pid="+pid+",") {
				held++
			}
		}
		if held == len(clientPorts) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v the connections from ports %v are not all held by pid %q: %q", within, clientPorts, pid, saw)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitStoppedAccepting polls every 100 ms until process pid no longer
// holds the service's listening socket. An old generation closes its copy
// as it starts to drain, which may be just after the reload command has
// returned; until then it may still accept a new connection.
func (s *service) waitStoppedAccepting(ctx context.Context, within time.Duration, pid string) error {
	deadline := time.Now().Add(within)
	for {
		out, _, err := s.box.Exec(ctx, "ss", "-tlnpH", fmt.Sprintf("( sport = :%d )", s.port))
		if err != nil {
			return err
		}
		if !strings.Contains(out, "pid="+pid+",") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v pid %s still holds the listening socket: %s", within, pid, strings.TrimSpace(out))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
