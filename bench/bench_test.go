package bench

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

var (
	flagFull    = flag.Bool("full", false, "full durations (make bench); without it, a smoke run of a few seconds per scenario")
	flagReport  = flag.String("report", "", "write the Markdown report to this `file` (default: a temporary file, checked and discarded)")
	flagCharts  = flag.String("charts", "", "write the SVG charts to this `directory` (default: beside the report)")
	flagCommand = flag.String("command", "", "the `command` shown in the report (default: the go test command)")
	flagKeep    = flag.String("keep", "", "keep the servers' logs and the sandbox journal in this `directory`")
)

// config is how long and how hard each scenario runs.
type config struct {
	clients int

	warmup, steadyRun time.Duration
	steadyRounds      int

	// Disruption runs: lead-in, period and tail.
	lead, every, tail     time.Duration
	reloads, restarts     int
	altEvents             int
	bin                   time.Duration // of the charts
	stopRounds, idleConns int
	slow, ranBefore       time.Duration

	// Scenario 6: events per run, their periods, the load before the
	// first and after the last, and the size of one h2load run. Restarts
	// stay below systemd's default start limit (5 starts in 10 s).
	protoReloads, protoRestarts         int
	protoReloadEvery, protoRestartEvery time.Duration
	protoLead, protoTail                time.Duration
	h2loadRequests                      int
	// Scenario 7: rounds, HTTP/2 connections, Ticks streams, webapp's
	// --drain-timeout.
	drainRounds, drainConns, drainStreams int
	drainTimeout                          time.Duration
	// Scenario 9: WebSocket and SSE clients, reloads and restarts, and
	// the reloads of the contrast.
	liveWS, liveSSE                                int
	liveReloads, liveRestarts, liveContrastReloads int
	// Scenario 10: the keep-alive connection counts, the reloads per run
	// and their period, the generator's load before the first reload and
	// after the last (wrk's, which gives no time series, is shorter), the
	// stop's connections and the period of the paced half of them.
	scaleConns                                     []int
	scaleReloads                                   int
	scaleEvery, scaleLead, scaleTail, scaleWrkLead time.Duration
	scaleStopConns                                 int
	scaleStopEvery                                 time.Duration
}

var (
	full = config{
		clients: load.DefaultClients,
		warmup:  time.Second, steadyRun: time.Second, steadyRounds: 16,
		lead: 2 * time.Second, every: 2500 * time.Millisecond, tail: 2 * time.Second,
		reloads: 20, restarts: 10, altEvents: 10,
		bin:        100 * time.Millisecond,
		stopRounds: 5, idleConns: 32,
		slow: 2 * time.Second, ranBefore: 200 * time.Millisecond,
		protoReloads: 20, protoRestarts: 10,
		protoReloadEvery: 1500 * time.Millisecond, protoRestartEvery: 3 * time.Second,
		protoLead: time.Second, protoTail: time.Second,
		h2loadRequests: 4000,
		drainRounds:    3, drainConns: 100, drainStreams: 20, drainTimeout: 20 * time.Second,
		liveWS: 500, liveSSE: 100, liveReloads: 20, liveRestarts: 5, liveContrastReloads: 3,
		scaleConns: []int{1000, 4000, 16000}, scaleReloads: 20,
		scaleEvery: 2 * time.Second, scaleLead: 10 * time.Second, scaleTail: 5 * time.Second, scaleWrkLead: 2 * time.Second,
		scaleStopConns: 16000, scaleStopEvery: 2 * time.Second,
	}
	smoke = config{
		clients: load.DefaultClients,
		warmup:  200 * time.Millisecond, steadyRun: 500 * time.Millisecond, steadyRounds: 2,
		lead: time.Second, every: 1500 * time.Millisecond, tail: time.Second,
		reloads: 2, restarts: 2, altEvents: 1,
		bin:        50 * time.Millisecond,
		stopRounds: 1, idleConns: 8,
		slow: 500 * time.Millisecond, ranBefore: 100 * time.Millisecond,
		protoReloads: 2, protoRestarts: 1,
		protoReloadEvery: time.Second, protoRestartEvery: time.Second,
		protoLead: 500 * time.Millisecond, protoTail: 500 * time.Millisecond,
		h2loadRequests: 2000,
		drainRounds:    1, drainConns: 10, drainStreams: 4, drainTimeout: 4 * time.Second,
		liveWS: 50, liveSSE: 10, liveReloads: 2, liveRestarts: 1, liveContrastReloads: 1,
		scaleConns: []int{300}, scaleReloads: 2,
		scaleEvery: 1500 * time.Millisecond, scaleLead: 2 * time.Second, scaleTail: 1500 * time.Millisecond, scaleWrkLead: 500 * time.Millisecond,
		scaleStopConns: 300, scaleStopEvery: time.Second,
	}
)

// TestBench runs the benchmark: with -full as `make bench` does, without
// it as a smoke test of a few seconds per scenario.
func TestBench(t *testing.T) {
	requireRoot(t)
	// Where a sandbox cannot boot: skip off CI, fail on CI.
	systemdtest.Require(t)
	cfg := smoke
	if *flagFull {
		cfg = full
	}
	started := time.Now()
	work := t.TempDir()
	logs := work
	if *flagKeep != "" {
		logs = *flagKeep
		if err := os.MkdirAll(logs, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	report, charts, chartLink := outputPaths(t, work)
	bins := buildAll(t, work)
	rep := &Report{
		Machine: ThisMachine(),
		Command: *flagCommand,
		GoTest:  goTestCommand(),
		Commit:  Commit("..", "BENCHMARKS.md", "bench/charts"),
		Started: started,
		Full:    *flagFull,
		Clients: cfg.clients,
	}
	if rep.Command == "" {
		rep.Command = rep.GoTest
	}
	env := &benchEnv{cfg: cfg, bins: bins, logs: logs}

	t.Run("steady", func(t *testing.T) { rep.Steady = runSteady(t, env) })
	t.Run("stop", func(t *testing.T) { rep.Stop = runStop(t, env) })
	t.Run("alternatives", func(t *testing.T) { rep.Alternatives = runAlternatives(t, env) })
	t.Run("systemd", func(t *testing.T) {
		rep.Reload, rep.Restart = runSystemd(t, env, &rep.Machine)
	})
	t.Run("drain", func(t *testing.T) { rep.Drain = runDrain(t, env) })
	protoSkipped := false
	t.Run("protocols", func(t *testing.T) {
		defer func() { protoSkipped = t.Skipped() }()
		rep.Protocols = runProtocols(t, env)
	})
	skipped257 := false
	t.Run("systemd257", func(t *testing.T) {
		defer func() { skipped257 = t.Skipped() }()
		rep.Reload257 = runSystemd257(t, env)
	})
	liveSkipped := false
	t.Run("longlived", func(t *testing.T) {
		defer func() { liveSkipped = t.Skipped() }()
		rep.LongLived = runLongLived(t, env)
	})
	scaleSkipped := false
	t.Run("scale", func(t *testing.T) {
		defer func() { scaleSkipped = t.Skipped() }()
		rep.Scale = runScale(t, env)
	})
	rep.Took = time.Since(started)
	rep.Machine.LoadAfter = LoadAverage()
	// protocols is skipped off CI when h2load or ghz cannot be had,
	// longlived without python3-websockets, and scale without wrk. A run filtered to some
	// scenarios (-run 'TestBench/longlived') writes what it measured.
	filtered := strings.Contains(flag.Lookup("test.run").Value.String(), "/")
	if t.Failed() || !filtered && (rep.Steady == nil || rep.Stop == nil || rep.Reload == nil || rep.Restart == nil || len(rep.Alternatives) == 0 ||
		rep.Drain == nil || (!protoSkipped && rep.Protocols == nil) || (!skipped257 && len(rep.Reload257) != len(reload257Variants)) ||
		(!liveSkipped && rep.LongLived == nil) || (!scaleSkipped && rep.Scale == nil)) {
		t.Errorf("a scenario did not run to its end: the report below is incomplete")
	}

	writeAll(t, rep, report, charts, chartLink, cfg.bin)
	t.Logf("report written to %s, charts to %s (%v)", report, charts, rep.Took.Round(time.Second))
}

// benchEnv is what the scenarios share.
type benchEnv struct {
	cfg  config
	bins binaries
	logs string
}

// logFile opens a log file for a server of the benchmark; it is closed at
// the end of the test.
func (e *benchEnv) logFile(t testing.TB, name string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(e.logs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// requireRoot applies the project's policy: the benchmark needs root for
// the systemd sandbox. With CI=true it fails without; otherwise it skips
// with one line saying why and how to run it.
func requireRoot(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "linux" && os.Geteuid() == 0 {
		return
	}
	why := "the benchmark needs root on Linux (it boots a systemd sandbox)"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("bench: CI=true but %s", why)
	}
	t.Skipf("bench: %s; run `sudo make bench`, or `sudo make test` for the short version", why)
}

// binaries are the programs under test, built for this run.
type binaries struct {
	webapp, plain, flip string
}

func buildAll(t *testing.T, dir string) binaries {
	t.Helper()
	b := binaries{
		webapp: filepath.Join(dir, "webapp"),
		plain:  filepath.Join(dir, "plainhttp"),
		flip:   filepath.Join(dir, "flipapp"),
	}
	// webapp goes into the sandbox too: static, like the packages'.
	goBuild(t, "..", b.webapp, "./cmd/webapp")
	goBuild(t, ".", b.plain, "./cmd/plainhttp")
	goBuild(t, ".", b.flip, "./cmd/flipapp")
	return b
}

func goBuild(t *testing.T, dir, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in %s: %v\n%s", pkg, dir, err, b)
	}
}

// goTestCommand returns the go test command line that started this test
// binary, rebuilt from its arguments.
func goTestCommand() string {
	keep := map[string]bool{"run": true, "timeout": true, "count": true, "v": true}
	cmd, own := []string{"go", "test"}, []string{"-args"}
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if rest, ok := strings.CutPrefix(name, "test."); ok {
			if keep[rest] && !(rest == "v" && val == "true") {
				cmd = append(cmd, "-"+rest+"="+val)
			} else if rest == "v" {
				cmd = append(cmd, "-v")
			}
			continue
		}
		if name == "command" || name == "keep" {
			if !hasVal {
				i++
			}
			continue
		}
		own = append(own, args[i])
		if isBoolFlag(name) {
			continue
		}
		if !hasVal && i+1 < len(args) {
			i++
			own = append(own, args[i])
		}
	}
	cmd = append(cmd, ".")
	if len(own) > 1 {
		cmd = append(cmd, own...)
	}
	return strings.Join(cmd, " ")
}

func isBoolFlag(name string) bool {
	f := flag.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// outputPaths returns the report's and the charts' absolute paths and the
// charts' directory relative to the report's, creating the directories.
func outputPaths(t *testing.T, work string) (report, charts, link string) {
	t.Helper()
	report = *flagReport
	if report == "" {
		report = filepath.Join(work, "BENCHMARKS.md")
	}
	charts = *flagCharts
	if charts == "" {
		charts = filepath.Dir(report)
	}
	var err error
	if report, err = filepath.Abs(report); err != nil {
		t.Fatal(err)
	}
	if charts, err = filepath.Abs(charts); err != nil {
		t.Fatal(err)
	}
	if link, err = filepath.Rel(filepath.Dir(report), charts); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(report), charts} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return report, charts, filepath.ToSlash(link)
}

func writeAll(t *testing.T, rep *Report, report, charts, rel string, bin time.Duration) {
	t.Helper()
	var files []string
	chart := func(key string, f func(path string) error) {
		p := filepath.Join(charts, key+".svg")
		if err := f(p); err != nil {
			t.Errorf("chart %s: %v", key, err)
		}
		files = append(files, p)
	}
	if rep.Steady != nil {
		chart("steady", func(p string) error { return SteadyChart(p, rep.Steady) })
	}
	if rep.Stop != nil {
		chart("stop", func(p string) error { return StopChart(p, rep.Stop) })
	}
	for _, d := range append(append([]*Disruption{rep.Reload, rep.Restart}, rep.Alternatives...), rep.Reload257...) {
		if d == nil {
			continue
		}
		chart(d.Key, func(p string) error { return TimelineChart(p, d.Title, d.Noun, d.Runs, bin) })
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md, rel); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(report, md.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The outputs must be what they claim to be.
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.Contains(b[:min(len(b), 512)], []byte("<svg")) {
			t.Errorf("%s is not an SVG file", f)
		}
		if !bytes.Contains(md.Bytes(), []byte("("+path.Join(rel, filepath.Base(f))+")")) {
			t.Errorf("the report does not link %s", f)
		}
	}
	for _, want := range []string{"## Headline", "## Targets not reached"} {
		if !bytes.Contains(md.Bytes(), []byte(want)) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

// cmdError wraps a command's failure with its standard error.
func cmdError(err error, stderr string) error {
	if err == nil {
		return nil
	}
	if s := strings.TrimSpace(stderr); s != "" {
		return fmt.Errorf("%w: %s", err, s)
	}
	return err
}
