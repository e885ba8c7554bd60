package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// Bounds of scenario 10.
const (
	// wrkMaxConns is the most connections one wrk process holds. The
	// machine's open-file limit (20,000 per process) would allow 8,000
	// of them to two processes, but a wrk process opens all of its
	// connections at once: a second process of 8,000 beside a busy first
	// one overflowed webapp's accept queue (backlog 4,096; measured,
	// 1,748 ListenOverflows, each a connection retried a second or more
	// later), 4,000 at a time did not. So 4,000 to a process, the
	// processes started one after the other.
	wrkMaxConns = 4000
	// scaleDialers is how many of the benchmark's own clients set up
	// their connections at once (the memory and the stop).
	scaleDialers = 256
	// scaleTimeout is the per-request timeout of every client (wrk's
	// --timeout, the generator's Timeout).
	scaleTimeout = 5 * time.Second
	// scaleConnectWait bounds the wait for a run's connections to be up.
	scaleConnectWait = 90 * time.Second
	// scaleEventSlack bounds each reload beyond its period, for the
	// runs' time limits.
	scaleEventSlack = 30 * time.Second
	// scaleMaxSamples is the generator's sample cap: 16,000 connections
	// for a minute stay below it on 2 cores.
	scaleMaxSamples = 8_000_000
	// scaleNoFile is the LimitNOFILE= the benchmark gives webapp.service
	// when the unit's own is below what the largest count needs.
	scaleNoFile = 65536
	// scaleStopRequests bounds the requests one connection of the stop
	// sends.
	scaleStopRequests = 1000
)

// scaleWebapp is webapp.socket and webapp.service from systemd/units in
// a box of scenario 10's own with a network namespace of its own, where
// every client of the scenario connects from (wrk through nsenter, the
// benchmark's own through dial): its TCP counters then count them only.
type scaleWebapp struct {
	box  *systemdtest.Box
	dial *netnsDialer
	// port and addr are the socket's, as the shipped webapp.socket says.
	port int
	addr string
	// noFile is the drop-in line for the open-file limit, if one is
	// needed.
	noFile string
}

func (w *scaleWebapp) url() string { return "http://" + w.addr + "/" }

// runScale is scenario 10: 1,000, 4,000 and 16,000 keep-alive
// connections (a few hundred in the smoke run) through reloads under
// the real systemd 252, loaded by wrk and by the generator, with webapp's
// connection hand-over and without it; webapp's resident memory per open
// connection against plain net/http's; and `systemctl stop` with the
// largest count open.
func runScale(t *testing.T, e *benchEnv) *Scale {
	cfg := e.cfg
	wrk := requireTool(t, "wrk", "Debian's wrk")
	flag, err := hasConnHandover(e.bins.webapp)
	if err != nil {
		t.Fatal(err)
	}
	s := &Scale{Reloads: cfg.scaleReloads, Every: cfg.scaleEvery, Margin: load.DefaultMargin, Lead: cfg.scaleLead, Tail: cfg.scaleTail, Timeout: scaleTimeout, DialBatch: scaleDialBatch, WrkConns: wrkMaxConns, HandoverFlag: flag}
	variants := []ScaleVariant{{Handover: false, Title: "today's (no `--conn-handover`)"}}
	if flag {
		variants = []ScaleVariant{
			{Handover: true, Title: "with hand-over"},
			{Handover: false, Title: "without (`--conn-handover=false`)", Opts: "--conn-handover=false"},
		}
	}
	largest := slicesMax(cfg.scaleConns)
	box := systemdtest.Boot(t, systemdtest.Options{Name: "bench-scale", PrivateNetwork: true})
	w := installScaleWebapp(t, e, box, variants[0], largest, s)
	s.Overhead = sandboxOverhead(t, box)

	for _, n := range cfg.scaleConns {
		m := scaleMemory(t, e, w, variants[0], n)
		t.Logf("memory, %d idle connections: webapp %d → %d KiB (%.1f KiB each), plain net/http %d → %d KiB (%.1f KiB each)",
			n, m.Webapp.Before>>10, m.Webapp.With>>10, m.Webapp.PerConn(n)/1024, m.Plain.Before>>10, m.Plain.With>>10, m.Plain.PerConn(n)/1024)
		s.Memory = append(s.Memory, m)
	}
	s.Stop = scaleStop(t, w, variants[0], cfg.scaleStopConns, cfg.scaleStopEvery)

	for _, v := range variants {
		w.setVariant(t, v)
		for _, n := range cfg.scaleConns {
			s.Runs = append(s.Runs, scaleGenerator(t, e, w, v, n), scaleWrk(t, e, w, v, n, wrk))
		}
	}
	s.Notes = append(s.Notes, journalNote(t, e, box, "scale"))
	return s
}

// hasConnHandover says whether webapp's `serve --help` lists
// --conn-handover.
func hasConnHandover(webapp string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, webapp, "serve", "--help").CombinedOutput()
	if !bytes.Contains(out, []byte("-idle-grace")) {
		return false, fmt.Errorf("webapp serve --help: %v: %s", err, oneLine(lastLines(string(out), 3)))
	}
	return bytes.Contains(out, []byte("-conn-handover")), nil
}

// unitSetting is the last value of key in a unit file's text ("" if
// unset).
func unitSetting(unit []byte, key string) string {
	v := ""
	for l := range strings.Lines(string(unit)) {
		k, val, ok := strings.Cut(strings.TrimSpace(l), "=")
		if ok && strings.TrimSpace(k) == key {
			v = strings.TrimSpace(val)
		}
	}
	return v
}

func slicesMax(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// installScaleWebapp installs /usr/bin/webapp, webapp.socket and
// webapp.service from systemd/units as they are (the box has its own
// network: the socket's address is free there), starts the socket and
// the service in variant v, and gives the service a higher LimitNOFILE=
// when the unit's own would not hold the largest count.
func installScaleWebapp(t *testing.T, e *benchEnv, box *systemdtest.Box, v ScaleVariant, largest int, s *Scale) *scaleWebapp {
	w := &scaleWebapp{box: box, dial: newNetnsDialer(t, fmt.Sprintf("/proc/%d/ns/net", box.PID1()))}
	socket, err := os.ReadFile(filepath.Join("..", "systemd", "units", "webapp.socket"))
	if err != nil {
		t.Fatal(err)
	}
	w.addr = unitSetting(socket, "ListenStream")
	host, port, err := net.SplitHostPort(w.addr)
	if w.port, _ = strconv.Atoi(port); err != nil || net.ParseIP(host).To4() == nil || w.port == 0 {
		t.Fatalf("webapp.socket: ListenStream=%s, want a numeric IPv4 host:port", w.addr)
	}
	box.CopyFile(t, e.bins.webapp, "/usr/bin/webapp", 0o755)
	for _, u := range []string{"webapp.socket", "webapp.service"} {
		box.CopyFile(t, filepath.Join("..", "systemd", "units", u), "/etc/systemd/system/"+u, 0o644)
	}
	box.Systemctl(t, "daemon-reload")
	box.Systemctl(t, "start", "webapp.socket")
	w.setVariant(t, v)
	soft, hard := w.noFileLimit(t)
	if need := largest + 1024; soft < need {
		t.Logf("webapp.service's open-file limit is %d (hard %d), below the %d that %d connections need: LimitNOFILE=%d in the drop-in", soft, hard, need, largest, scaleNoFile)
		w.noFile = fmt.Sprintf("LimitNOFILE=%d", scaleNoFile)
		w.setVariant(t, v)
		soft, hard = w.noFileLimit(t)
		if soft < need {
			t.Fatalf("webapp.service's open-file limit is %d with %s, want at least %d", soft, w.noFile, need)
		}
	}
	s.NoFileDropIn = w.noFile
	s.Addr = w.addr
	var own syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &own); err == nil {
		s.OwnNoFile = int64(own.Max)
	}
	show := box.Show(t, "webapp.service", "LimitNOFILE", "LimitNOFILESoft")
	s.LimitNOFILE = fmt.Sprintf("%s (hard %s) in webapp's main process (`systemctl show`: `LimitNOFILESoft=%s`, `LimitNOFILE=%s`)", thousands(int64(soft)), thousands(int64(hard)), show["LimitNOFILESoft"], show["LimitNOFILE"])
	unit, err := os.ReadFile(filepath.Join("..", "systemd", "units", "webapp.service"))
	if err != nil {
		t.Fatal(err)
	}
	s.UnitNoFile = unitSetting(unit, "LimitNOFILE")
	return w
}

// setVariant writes webapp.service's drop-in for v and restarts the
// service (the socket stays), then waits until it serves.
func (w *scaleWebapp) setVariant(t *testing.T, v ScaleVariant) {
	t.Helper()
	dropIn := "[Service]\n"
	if v.Opts != "" {
		dropIn += "Environment=WEBAPP_OPTS=" + v.Opts + "\n"
	}
	if w.noFile != "" {
		dropIn += "# The benchmark's largest count needs more descriptors than the unit gives.\n" + w.noFile + "\n"
	}
	w.box.WriteFile(t, "/etc/systemd/system/webapp.service.d/bench.conf", []byte(dropIn), 0o644)
	w.box.Systemctl(t, "daemon-reload")
	w.restart(t)
}

// restart restarts webapp.service and waits until it serves: a fresh
// process.
func (w *scaleWebapp) restart(t *testing.T) {
	t.Helper()
	w.box.Systemctl(t, "restart", "webapp.service")
	if err := w.waitServing(t.Context(), 30*time.Second); err != nil {
		t.Fatalf("webapp in the sandbox: %v\n%s", err, w.box.Journal(t, "-u", "webapp.service", "-n", "30"))
	}
}

// waitServing polls webapp from the box's network until it answers 200.
func (w *scaleWebapp) waitServing(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		res, err := load.Run(ctx, w.url(), load.Options{Clients: 1, MaxRequests: 1, Timeout: 5 * time.Second, Dial: w.dial.DialContext})
		if err == nil && res.OK == 1 {
			return nil
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			if res != nil && len(res.FailureDetails) > 0 {
				return fmt.Errorf("not serving after %v: %s", timeout, res.FailureDetails[0].Error)
			}
			return fmt.Errorf("not serving after %v", timeout)
		}
	}
}

// activeOpens is the TCP ActiveOpens counter of the box's network
// namespace: the connections its clients opened (attempted).
func (w *scaleWebapp) activeOpens() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/snmp", w.box.PID1()))
	if err != nil {
		return 0, err
	}
	return ParseTCPActiveOpens(b)
}

// listenOverflows is the ListenOverflows counter of the box's network
// namespace: connections the kernel dropped because webapp's accept
// queue was full (0 if it cannot be read).
func (w *scaleWebapp) listenOverflows(t *testing.T) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/netstat", w.box.PID1()))
	if err == nil {
		var n int64
		if n, err = ParseListenOverflows(b); err == nil {
			return n
		}
	}
	t.Logf("listen overflows: %v", err)
	return 0
}

// acceptSettled reports whether webapp has accepted every connection
// made to its socket: the listener's accept queue is empty and no
// handshake is pending (the sandbox's /proc/net/tcp), and if not, what
// is left.
func (w *scaleWebapp) acceptSettled(t *testing.T) (bool, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", w.box.PID1()))
	if err != nil {
		t.Fatalf("accept queue: %v", err)
	}
	queued, pending, found := AcceptBacklog(b, w.port)
	if !found {
		return false, fmt.Sprintf("no listener on port %d", w.port)
	}
	return queued == 0 && pending == 0, fmt.Sprintf("%d in the accept queue, %d handshakes pending", queued, pending)
}

func (w *scaleWebapp) mainPID(t *testing.T) int {
	t.Helper()
	pid, _ := strconv.Atoi(w.box.Show(t, "webapp.service", "MainPID")["MainPID"])
	if pid <= 0 {
		t.Fatalf("webapp.service has no MainPID")
	}
	return pid
}

// noFileLimit is the open-file limit of webapp's main process, as the
// process has it (Go raises the soft limit to the hard one at start).
func (w *scaleWebapp) noFileLimit(t *testing.T) (soft, hard int) {
	t.Helper()
	pid := w.mainPID(t)
	for l := range strings.Lines(string(w.box.ReadFile(t, fmt.Sprintf("/proc/%d/limits", pid)))) {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				soft, _ = strconv.Atoi(f[0])
				hard, _ = strconv.Atoi(f[1])
				return soft, hard
			}
		}
	}
	t.Fatalf("/proc/%d/limits: no \"Max open files\" line", pid)
	return 0, 0
}

// rss is VmRSS of pid in the box.
func (w *scaleWebapp) rss(pid int) (int64, error) {
	out, stderr, err := w.box.Exec(context.Background(), "cat", fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, cmdError(err, stderr)
	}
	return ParseVmRSS([]byte(out))
}

// reload runs `systemctl reload webapp.service` in the box.
func (w *scaleWebapp) reload(ctx context.Context, _ int) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	_, stderr, err := w.box.Exec(ctx, "systemctl", "reload", "webapp.service")
	return cmdError(err, stderr)
}

// drains returns webapp's drain events since since, waiting (at most
// 30 s) until there are at least want drain-finished entries of the kind
// asked for (a reload's old generation, or a stop).
func (w *scaleWebapp) drains(t *testing.T, since time.Time, want int, stopping bool) (started, finished []DrainEvent) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := w.box.Journal(t, "-u", "webapp.service", "-o", "json", "-q",
			"--output-fields=BATON_EVENT,BATON_PID,BATON_STOPPING,BATON_DURATION_USEC,BATON_CUT,BATON_CONNECTIONS",
			"--since", fmt.Sprintf("@%d", since.Unix()))
		evs, err := ParseDrainEvents([]byte(out))
		if err != nil {
			t.Errorf("webapp's journal: %v", err)
		}
		started, finished = nil, nil
		for _, ev := range evs {
			if ev.At.Before(since) || ev.Stopping != stopping {
				continue
			}
			if ev.Event == "drain-finished" {
				finished = append(finished, ev)
			} else {
				started = append(started, ev)
			}
		}
		if len(finished) >= want || time.Now().After(deadline) {
			return started, finished
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// noteDrains fills r's drains from the journal since since.
func (w *scaleWebapp) noteDrains(t *testing.T, r *ScaleRun, since time.Time) {
	ok := len(r.Events) - r.EventErrors()
	started, finished := w.drains(t, since, ok, false)
	for _, ev := range finished {
		r.Drains = append(r.Drains, ev.Duration)
		r.DrainCut += ev.Cut
	}
	for _, ev := range started {
		r.DrainConns = append(r.DrainConns, ev.Connections)
	}
	if len(finished) < ok {
		// Which old generations are still there, 30 s after the run.
		main := w.mainPID(t)
		out, _, _ := w.box.Exec(t.Context(), "pgrep", "-x", "webapp")
		for _, f := range strings.Fields(out) {
			if pid, _ := strconv.Atoi(f); pid != main {
				r.Lingering++
			}
		}
		t.Logf("%d connections, %s, %s: %d drain-finished entries in the journal for %d reloads; %d old generations still running (pgrep: %s, main %d)",
			r.Conns, r.Variant.Title, r.Client, len(finished), ok, r.Lingering, strings.Join(strings.Fields(out), " "), main)
	}
}

// scaleGenerator loads webapp with n keep-alive clients of the generator
// through the reloads.
func scaleGenerator(t *testing.T, e *benchEnv, w *scaleWebapp, v ScaleVariant, n int) ScaleRun {
	cfg := e.cfg
	ramp := newRampDialer(n, w.dial.DialContext)
	began := time.Now()
	if err := ramp.preconnect(t.Context(), w.addr, scaleDialBatch, func() (bool, string) { return w.acceptSettled(t) }); err != nil {
		t.Fatalf("generator, %d connections: %v", n, err)
	}
	// webapp closes a connection that sends no request within its
	// ReadHeaderTimeout (10 s): the load must begin well before.
	t.Logf("generator, %d connections: opened and accepted in %v before the load", n, time.Since(began).Round(time.Millisecond))
	opts := load.Options{
		Clients:  n,
		Duration: cfg.scaleLead + time.Duration(cfg.scaleReloads)*(cfg.scaleEvery+scaleEventSlack) + cfg.scaleTail,
		Timeout:  scaleTimeout,
		Dial:     ramp.dial,
		Schedule: load.Schedule{Start: cfg.scaleLead, Every: cfg.scaleEvery, Count: cfg.scaleReloads, Run: w.reload},
		Tail:     cfg.scaleTail, MaxSamples: scaleMaxSamples,
	}
	ctx, cancel := context.WithTimeout(t.Context(), opts.Duration+2*time.Minute)
	defer cancel()
	since := time.Now()
	over0 := w.listenOverflows(t)
	res, err := load.Run(ctx, w.url(), opts)
	if err != nil {
		t.Fatalf("generator, %d connections: %v", n, err)
	}
	r := ScaleRun{
		Conns: n, Variant: v, Client: "generator",
		Command:  fmt.Sprintf("baton's generator (`internal/load`, in the test's process): %d keep-alive clients, a %s timeout, no retries", n, fmtDur(scaleTimeout)),
		Requests: res.Requests, Failed: res.Failed(), Failures: byClass(res.Failures), RPS: res.RPS,
		Opened: res.Dials - int64(n),
	}
	for _, ev := range res.Events {
		r.Events = append(r.Events, ProtoEvent{Start: ev.Start, Duration: ev.Duration, Error: ev.Error})
	}
	// Without every client answered, the steady span is the tail alone.
	from := time.Duration(0)
	if len(res.Events) > 0 {
		from = res.Events[0].Window.From
	}
	if at := ramp.upAt(); !at.IsZero() {
		// Every client has had its first answer.
		from = at.Sub(res.Started) + 500*time.Millisecond
	}
	to := res.Elapsed
	if k := len(res.Events); k > 0 {
		to = min(to, res.Events[k-1].End()+cfg.scaleTail)
	}
	th := ReloadThroughput(res.Samples, res.Events, from, to)
	r.Throughput = &th
	r.ListenOverflows = w.listenOverflows(t) - over0
	r.FirstFailures = res.FailureDetails[:min(len(res.FailureDetails), maxFailureRows)]
	res.Samples = nil
	w.noteDrains(t, &r, since)
	t.Logf("generator, %d connections, %s: %d requests (%.0f/s), %d failed (%s), %d dials beyond the first %d (%.1f per reload), throughput around reloads %.0f/s against steady %.0f/s (%.2f×; spans %v, %v; all up at %v), reloads %d (%d failed)",
		n, v.Title, r.Requests, r.RPS, r.Failed, r.Failures, r.Opened, n, r.OpenedPerReload(), th.Pooled, th.Steady, th.Ratio(), th.WindowSpan, th.SteadySpan, from, len(r.Events), r.EventErrors())
	for _, f := range r.FirstFailures {
		t.Logf("  failed: %s at %v, request %d on its connection: %s", f.Class, f.Offset.Round(time.Millisecond), f.ConnRequest, f.Error)
	}
	return r
}

// rampDialer dials for the generator and remembers when every client
// had the first bytes of its first response. The clients' first
// connections are opened before the load begins (preconnect): 16,000
// dials at once overflowed webapp's accept queue (Backlog=4096), and
// the kernel's retransmissions of the dropped handshakes held a few
// hundred first requests past the clients' 5 s timeout, failures of the
// ramp rather than of a reload. Holding each client's first request
// until others were answered instead made the ramp slower than the
// timeout (the clients already connected keep webapp busy).
type rampDialer struct {
	first   int64
	dials   atomic.Int64
	served  atomic.Int64
	allUpAt atomic.Int64 // unix nanoseconds
	d       func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex
	pool []net.Conn // opened by preconnect, not yet given out
}

// scaleDialBatch is how many connections preconnect opens at once:
// within the socket's Backlog=4096, so that a batch fits in the accept
// queue however slowly webapp accepts.
const scaleDialBatch = 4000

// preconnect opens the first connections to addr, batch at a time, each batch
// once webapp has accepted those before it (settled: its accept queue is
// empty and no handshake is pending), within scaleConnectWait each.
func (r *rampDialer) preconnect(ctx context.Context, addr string, batch int, settled func() (bool, string)) error {
	for len(r.pool) < int(r.first) {
		k := min(batch, int(r.first)-len(r.pool))
		conns := make([]net.Conn, k)
		errs := make([]error, k)
		var wg sync.WaitGroup
		for i := range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conns[i], errs[i] = r.d(ctx, "tcp", addr)
			}()
		}
		wg.Wait()
		for i := range conns {
			if errs[i] != nil {
				for _, c := range append(r.pool, conns...) {
					if c != nil {
						c.Close()
					}
				}
				r.pool = nil
				return fmt.Errorf("opening connection %d before the load: %w", len(r.pool)+i+1, errs[i])
			}
		}
		r.pool = append(r.pool, conns...)
		deadline := time.Now().Add(scaleConnectWait)
		for {
			ok, what := settled()
			if ok {
				break
			}
			if time.Now().After(deadline) || !sleepCtx(ctx, 20*time.Millisecond) {
				return fmt.Errorf("%d connections open, webapp has not accepted them all after %v: %s", len(r.pool), scaleConnectWait, what)
			}
		}
	}
	return nil
}

func newRampDialer(n int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *rampDialer {
	return &rampDialer{first: int64(n), d: dial}
}

func (r *rampDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	if k := len(r.pool); k > 0 {
		c := r.pool[k-1]
		r.pool = r.pool[:k-1]
		r.mu.Unlock()
		r.dials.Add(1)
		return &rampConn{Conn: c, r: r}, nil
	}
	r.mu.Unlock()
	c, err := r.d(ctx, network, addr)
	if err != nil || r.dials.Add(1) > r.first {
		return c, err
	}
	return &rampConn{Conn: c, r: r}, nil
}

// answered counts a first connection's first answer.
func (r *rampDialer) answered() {
	if r.served.Add(1) == r.first {
		r.allUpAt.Store(time.Now().UnixNano())
	}
}

// upAt is when every client had the first bytes of its first response
// (zero if they never all did).
func (r *rampDialer) upAt() time.Time {
	if ns := r.allUpAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// rampConn is a client's first connection; its first bytes read count
// as the client's first answer.
type rampConn struct {
	net.Conn
	r    *rampDialer
	done atomic.Bool
}

func (c *rampConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.done.Load() && !c.done.Swap(true) {
		c.r.answered()
	}
	return n, err
}

// scaleWrk loads webapp with n keep-alive connections of wrk (several
// processes above wrkMaxConns) through the reloads: wrk runs for
// an upper bound of time and is interrupted (SIGINT, after which it reports)
// once the tail is over.
func scaleWrk(t *testing.T, e *benchEnv, w *scaleWebapp, v ScaleVariant, n int, bin string) ScaleRun {
	cfg := e.cfg
	procs := (n + wrkMaxConns - 1) / wrkMaxConns
	threads := max(1, runtime.NumCPU()/procs)
	bound := cfg.scaleWrkLead + time.Duration(cfg.scaleReloads)*(cfg.scaleEvery+scaleEventSlack) + cfg.scaleWrkLead + scaleConnectWait
	ctx, cancel := context.WithTimeout(t.Context(), bound+time.Minute)
	defer cancel()
	r := ScaleRun{Conns: n, Variant: v, Client: "wrk"}
	over0 := w.listenOverflows(t)
	type proc struct {
		cmd *exec.Cmd
		out bytes.Buffer
	}
	var ps []*proc
	defer func() {
		for _, p := range ps {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()
	since := time.Now()
	var t0 time.Time
	// The processes start one after the other, each once the connections
	// of those before it are up and accepted, so that no more than
	// wrkMaxConns connections arrive at once.
	want := 0
	for i := range procs {
		c := n / procs
		if i == procs-1 {
			c = n - (procs-1)*(n/procs)
		}
		want += c
		args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(c), "-d", fmt.Sprintf("%ds", int(bound.Seconds())), "--timeout", fmt.Sprintf("%ds", int(scaleTimeout.Seconds())), w.url()}
		if i == 0 {
			r.Command = fmt.Sprintf("`wrk %s`", strings.Join(args[:len(args)-1], " ")+" URL")
			if procs > 1 {
				r.Command += fmt.Sprintf(" ×%d, each started once the connections of the one before were up", procs)
			}
			r.Command += ", interrupted after the tail"
		}
		// nsenter enters the box's network namespace only and then is wrk
		// (it does not fork): the signal below reaches wrk.
		ns := append([]string{fmt.Sprintf("--net=/proc/%d/ns/net", w.box.PID1()), "--", bin}, args...)
		p := &proc{cmd: exec.CommandContext(ctx, "nsenter", ns...)}
		p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
		p.cmd.WaitDelay = 5 * time.Second
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("wrk: %v", err)
		}
		if i == 0 {
			t0 = time.Now()
		}
		ps = append(ps, p)
		up, err := w.waitEstablished(ctx, want, scaleConnectWait)
		if err != nil {
			states, _, _ := w.box.Exec(ctx, "sh", "-c", "ss -Htan | awk '{print $1}' | sort | uniq -c")
			t.Logf("wrk, %d connections: %v; %d listen overflows so far; sockets by state: %s", n, err, w.listenOverflows(t)-over0, strings.Join(strings.Fields(states), " "))
		}
		if up < want {
			r.Failures = fmt.Sprintf("only %d of %d connections up after %s; ", up, want, fmtDur(scaleConnectWait))
		}
		// Up on wrk's side is not yet accepted: the next process starts
		// once webapp's accept queue is empty, so that its burst of
		// connections fits in it (Backlog=4096).
		for deadline := time.Now().Add(scaleConnectWait); ; {
			ok, what := w.acceptSettled(t)
			if ok {
				break
			}
			if time.Now().After(deadline) || !sleepCtx(ctx, 20*time.Millisecond) {
				t.Logf("wrk, %d connections: after %v %s", n, scaleConnectWait, what)
				break
			}
		}
	}
	opens0, err := w.activeOpens()
	if err != nil {
		t.Fatal(err)
	}
	sleepCtx(ctx, cfg.scaleWrkLead)
	r.Events = runReloads(ctx, t0, cfg.scaleReloads, cfg.scaleEvery, w.reload)
	sleepCtx(ctx, cfg.scaleWrkLead)
	opens1, err := w.activeOpens()
	if err != nil {
		t.Fatal(err)
	}
	r.Opened = opens1 - opens0
	r.ListenOverflows = w.listenOverflows(t) - over0
	var sum WrkSummary
	for _, p := range ps {
		_ = p.cmd.Process.Signal(os.Interrupt)
	}
	for _, p := range ps {
		err := p.cmd.Wait()
		s, perr := ParseWrk(p.out.Bytes())
		if perr != nil {
			t.Errorf("wrk, %d connections: %v (%v)", n, perr, err)
			continue
		}
		sum = sum.Add(s)
	}
	r.Requests, r.Failed = sum.Requests, sum.Errors()
	if sum.Took > 0 {
		r.RPS = float64(sum.Requests) / sum.Took.Seconds()
	}
	r.Failures += fmt.Sprintf("connect %d, read %d, write %d, timeout %d, non-2xx %d", sum.Connect, sum.Read, sum.Write, sum.Timeout, sum.Non2xx)
	w.noteDrains(t, &r, since)
	t.Logf("wrk, %d connections (%d processes, %d threads each), %s: %d requests (%.0f/s), %d failed (%s), %d TCP opens in the box after all were up (%.1f per reload), reloads %d (%d failed)",
		n, procs, threads, v.Title, r.Requests, r.RPS, r.Failed, r.Failures, r.Opened, r.OpenedPerReload(), len(r.Events), r.EventErrors())
	return r
}

// runReloads runs count reloads, each starting every after the last one
// started or when it returned if later (the generator's schedule), and
// returns them relative to t0.
func runReloads(ctx context.Context, t0 time.Time, count int, every time.Duration, run func(context.Context, int) error) []ProtoEvent {
	var evs []ProtoEvent
	next := time.Now()
	for i := range count {
		if !sleepCtx(ctx, time.Until(next)) {
			break
		}
		start := time.Now()
		err := run(ctx, i)
		end := time.Now()
		ev := ProtoEvent{Start: start.Sub(t0), Duration: end.Sub(start)}
		if err != nil {
			ev.Error = err.Error()
		}
		evs = append(evs, ev)
		next = start.Add(every)
		if end.After(next) {
			next = end
		}
	}
	return evs
}

// sleepCtx sleeps d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitEstablished waits until n client connections to webapp's socket
// are established in the box, at most d.
func (w *scaleWebapp) waitEstablished(ctx context.Context, n int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	up := 0
	for {
		out, stderr, err := w.box.Exec(ctx, "ss", "-Htn", "state", "established", fmt.Sprintf("( dport = :%d )", w.port))
		if err != nil {
			return up, fmt.Errorf("ss: %w", cmdError(err, stderr))
		}
		up = strings.Count(out, "\n")
		if up >= n {
			return up, nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 200*time.Millisecond) {
			return up, fmt.Errorf("%d of %d connections established after %v", up, n, d)
		}
	}
}

// idleConn is a kept-alive connection of the benchmark's own clients.
type idleConn struct {
	c  net.Conn
	br *bufio.Reader
}

var scaleRequest = []byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: baton-bench\r\n\r\n")

// roundTrip sends GET / on c and reads the whole response.
func (c *idleConn) roundTrip(timeout time.Duration) (*http.Response, error) {
	c.c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.c.Write(scaleRequest); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp, fmt.Errorf("status %s", resp.Status)
	}
	return resp, nil
}

// dialFunc opens a connection.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// openIdle opens n keep-alive connections to addr with dial,
// scaleDialers at a time, each having had one response to GET /. A
// connection that fails while being set up is tried again, three times
// at most.
func openIdle(ctx context.Context, dial dialFunc, addr string, n int) ([]*idleConn, error) {
	conns := make([]*idleConn, n)
	var next atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range min(n, scaleDialers) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				var err error
				for range 3 {
					var c net.Conn
					dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					c, err = dial(dctx, "tcp", addr)
					cancel()
					if err != nil {
						continue
					}
					ic := &idleConn{c: c, br: bufio.NewReaderSize(c, 1024)}
					if _, err = ic.roundTrip(10 * time.Second); err != nil {
						c.Close()
						continue
					}
					c.SetDeadline(time.Time{})
					conns[i] = ic
					break
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		closeIdle(conns)
		return nil, fmt.Errorf("%d of %d connections could not be set up: %w", len(errs), n, errs[0])
	}
	return conns, nil
}

func closeIdle(conns []*idleConn) {
	for _, c := range conns {
		if c != nil {
			c.c.Close()
		}
	}
}

// scaleMemory measures the resident memory that n idle keep-alive
// connections add to a fresh webapp (under systemd, in variant v) and to
// a fresh plain net/http server with the same handler (bench/cmd/plainhttp,
// on the host).
func scaleMemory(t *testing.T, e *benchEnv, w *scaleWebapp, v ScaleVariant, n int) ScaleMemory {
	m := ScaleMemory{Conns: n, Variant: v}
	w.restart(t)
	pid := w.mainPID(t)
	var err error
	m.Webapp, err = rssWith(t.Context(), w.dial.DialContext, w.addr, n, func() (int64, error) { return w.rss(pid) })
	if err != nil {
		m.WebappError = err.Error()
		t.Errorf("webapp's memory with %d connections: %v", n, err)
	}
	p, url := startServer(t, e, "scale-plain", e.bins.plain, plainArgs, plainReady)
	var host net.Dialer
	m.Plain, err = rssWith(t.Context(), host.DialContext, strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"), n, func() (int64, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
		if err != nil {
			return 0, err
		}
		return ParseVmRSS(b)
	})
	if err != nil {
		m.PlainError = err.Error()
		t.Errorf("plain net/http's memory with %d connections: %v", n, err)
	}
	if _, err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("stop plainhttp: %v", err)
	}
	return m
}

// rssWith reads a server's resident memory after one request on a
// connection of its own, then with n idle keep-alive connections open
// that each had one response.
func rssWith(ctx context.Context, dial dialFunc, addr string, n int, rss func() (int64, error)) (RSSPair, error) {
	var p RSSPair
	warm, err := openIdle(ctx, dial, addr, 1)
	if err != nil {
		return p, err
	}
	closeIdle(warm)
	time.Sleep(500 * time.Millisecond)
	if p.Before, err = rss(); err != nil {
		return p, err
	}
	conns, err := openIdle(ctx, dial, addr, n)
	if err != nil {
		return p, err
	}
	defer closeIdle(conns)
	time.Sleep(time.Second)
	p.With, err = rss()
	return p, err
}

// scaleStop opens n keep-alive connections to webapp, each having had
// one response; half of them stay idle, the other half each send one
// request every period (spread evenly over the period), and once every
// one of those has sent two, `systemctl stop webapp.service` runs. Each
// connection then counts how it ended; afterwards the service is
// started again.
func scaleStop(t *testing.T, w *scaleWebapp, v ScaleVariant, n int, period time.Duration) *ScaleStop {
	s := &ScaleStop{Conns: n, Period: period, Variant: v}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	w.restart(t)
	conns, err := openIdle(ctx, w.dial.DialContext, w.addr, n)
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	defer closeIdle(conns)
	idle, paced := conns[:n/2], conns[n/2:]
	s.Groups = []StopGroup{
		{Title: "idle: one response, then nothing", Conns: len(idle)},
		{Title: fmt.Sprintf("one request every %s", fmtDur(period)), Conns: len(paced)},
	}
	var mu sync.Mutex
	var stopping, forced atomic.Bool
	// end records how a connection of group g ended.
	end := func(g int, how string, err error, sent int64) {
		mu.Lock()
		defer mu.Unlock()
		gr := &s.Groups[g]
		gr.Sent += sent
		switch how {
		case "close":
			gr.AnsweredClose++
		case "idle":
			gr.ClosedIdle++
		case "failed":
			gr.Failed++
		case "before":
			gr.FailedBefore++
		case "open":
			gr.Open++
		}
		if err != nil && len(gr.FirstErrors) < maxFailureRows {
			gr.FirstErrors = append(gr.FirstErrors, fmt.Sprintf("%s: %s", how, oneLine(err.Error())))
		}
	}
	// The connections are set up; each waits, reading, for the server to
	// close it (or, paced, for its next request's moment).
	hard := time.Now().Add(5 * time.Minute)
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(func() {
			c.c.SetReadDeadline(hard)
			_, err := c.br.Peek(1)
			switch {
			case err == nil:
				end(0, "failed", errors.New("bytes from the server with no request outstanding"), 0)
			case isTimeout(err):
				end(0, "open", nil, 0)
			case !stopping.Load():
				end(0, "before", fmt.Errorf("closed before the stop: %w", err), 0)
			default:
				end(0, "idle", nil, 0)
			}
		})
	}
	start := time.Now()
	for i, c := range paced {
		next := start.Add(period * time.Duration(i) / time.Duration(len(paced)))
		wg.Go(func() {
			var sent int64
			for range scaleStopRequests {
				c.c.SetReadDeadline(next)
				_, err := c.br.Peek(1)
				switch {
				case err == nil:
					end(1, "failed", errors.New("bytes from the server with no request outstanding"), sent)
					return
				case !isTimeout(err) && !stopping.Load():
					end(1, "before", fmt.Errorf("closed while idle before the stop: %w", err), sent)
					return
				case !isTimeout(err):
					end(1, "idle", nil, sent)
					return
				case forced.Load() || time.Now().After(hard):
					end(1, "open", nil, sent)
					return
				}
				during := stopping.Load()
				if during {
					sent++
				}
				resp, err := c.roundTrip(10 * time.Second)
				switch {
				case err != nil && (during || stopping.Load()):
					end(1, "failed", err, sent)
					return
				case err != nil:
					end(1, "before", err, sent)
					return
				case resp.Close:
					end(1, "close", nil, sent)
					return
				}
				next = next.Add(period)
			}
			end(1, "open", errors.New("request bound reached"), sent)
		})
	}
	// Every paced connection sends twice more before the stop, so that
	// its gap between requests is known.
	time.Sleep(time.Until(start.Add(2*period + 200*time.Millisecond)))
	since := time.Now()
	stopping.Store(true)
	_, stderr, err := w.box.Exec(ctx, "systemctl", "stop", "webapp.service")
	s.Took = time.Since(since)
	if err != nil {
		s.Error = cmdError(err, stderr).Error()
		t.Errorf("stop: %s", s.Error)
	}
	// webapp has exited: every connection must have ended by now, or
	// very soon.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		forced.Store(true)
		for _, c := range conns {
			c.c.SetReadDeadline(time.Now())
		}
		<-done
	}
	_, finished := w.drains(t, since, 1, true)
	if len(finished) > 0 {
		s.Drain, s.Cut = finished[len(finished)-1].Duration, finished[len(finished)-1].Cut
	} else {
		s.DrainError = "no drain-finished entry in the journal"
	}
	for _, g := range s.Groups {
		t.Logf("stop, %d connections, %s: %d requests sent during the stop; answered with Connection: close %d, closed while idle %d, failed %d, failed before the stop %d, still open %d; %q",
			g.Conns, g.Title, g.Sent, g.AnsweredClose, g.ClosedIdle, g.Failed, g.FailedBefore, g.Open, g.FirstErrors)
	}
	t.Logf("stop: systemctl stop took %v, webapp's drain %v, %d cut", s.Took, s.Drain, s.Cut)
	w.box.Systemctl(t, "start", "webapp.service")
	if err := w.waitServing(t.Context(), 30*time.Second); err != nil {
		t.Fatalf("webapp after the stop: %v", err)
	}
	return s
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
