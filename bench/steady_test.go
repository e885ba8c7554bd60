package bench

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// Readiness lines of the servers.
const (
	webappReady = "serving http on"
	plainReady  = "ready "
)

// startServer starts a server on a fresh port and stops it at the end of
// the test. It returns the process and its URL.
func startServer(t testing.TB, e *benchEnv, name, path string, args func(addr string) []string, ready string) (*Proc, string) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(systemdtest.Port(t)))
	p, err := StartProc(path, args(addr), e.logFile(t, name), ready, 10*time.Second)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			select {
			case <-p.Done():
			default:
				t.Errorf("stop %s: %v", name, err)
			}
		}
	})
	return p, "http://" + addr + "/"
}

func webappArgs(addr string) []string { return []string{"serve", "--listen", addr} }
func plainArgs(addr string) []string  { return []string{"--listen", addr} }

// loadFor runs plain load against url.
func loadFor(t testing.TB, url string, mode load.Mode, d time.Duration, clients int) *load.Result {
	t.Helper()
	res, err := load.Run(t.Context(), url, load.Options{Clients: clients, Mode: mode, Duration: d})
	if err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	return res
}

// runSteady is scenario 1: webapp, serving all four of its sockets,
// against plain net/http, and against webapp serving its http socket
// alone (what the other three servers cost); the load is on the http
// socket. Each round loads the three in the order A B C C B A, which
// server is A rotating from round to round, so that a drift of the
// machine's speed within a round weighs on all alike. Each server's CPU
// time over each run is read from /proc.
func runSteady(t *testing.T, e *benchEnv) *Steady {
	cfg := e.cfg
	certFile, keyFile := writeTestCertificate(t)
	port := func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(systemdtest.Port(t))) }
	https, grpc, udp, metrics := port(), port(), port(), port()
	allFour := func(addr string) []string {
		return []string{"serve", "--listen", addr, "--listen-https", https, "--listen-grpc", grpc, "--listen-udp", udp,
			"--listen-metrics", metrics, "--tls-cert", certFile, "--tls-key", keyFile}
	}
	type server struct {
		name string
		pid  int
		url  string
	}
	start := func(name, path string, args func(string) []string, ready string) server {
		p, url := startServer(t, e, "steady-"+name, path, args, ready)
		return server{name, p.PID, url}
	}
	https4, grpc4, udp4 := port(), port(), port()
	plainFour := func(addr string) []string {
		return []string{"--listen", addr, "--h2c", "--listen-https", https4, "--listen-grpc", grpc4, "--listen-udp", udp4,
			"--tls-cert", certFile, "--tls-key", keyFile}
	}
	servers := []server{
		start("webapp", e.bins.webapp, allFour, webappReady),
		start("plain", e.bins.plain, plainArgs, plainReady),
		start("webapp-http", e.bins.webapp, webappArgs, webappReady),
		start("plain-four", e.bins.plain, plainFour, plainReady),
	}
	checkFourSockets(t, https, grpc, udp)
	checkFourSockets(t, https4, grpc4, udp4)
	for _, m := range modes {
		for _, srv := range servers {
			loadFor(t, srv.url, m, cfg.warmup, cfg.clients)
		}
	}
	s := &Steady{Rounds: cfg.steadyRounds, Duration: cfg.steadyRun, AllSockets: true}
	for _, m := range modes {
		s.Modes = append(s.Modes, SteadyMode{Mode: m})
	}
	for round := range cfg.steadyRounds {
		order := make([]int, len(servers))
		for k := range order {
			order[k] = (round + k) % len(servers)
		}
		for i, m := range modes {
			sm := &s.Modes[i]
			runs := make([][]measured, len(servers))
			one := func(k int) {
				srv := servers[k]
				before := procCPU(t, srv.pid)
				res := loadFor(t, srv.url, m, cfg.steadyRun, cfg.clients)
				cpu := procCPU(t, srv.pid) - before
				if res.Failed() > 0 {
					t.Errorf("steady state, %s, %s: %d failed requests", m, srv.name, res.Failed())
				}
				runs[k] = append(runs[k], measured{res, cpu})
			}
			for _, k := range order {
				one(k)
			}
			for _, k := range slices.Backward(order) {
				one(k)
			}
			ws, ps, hs, fs := merged(runs[0]), merged(runs[1]), merged(runs[2]), merged(runs[3])
			sm.Webapp = append(sm.Webapp, ws)
			sm.Plain = append(sm.Plain, ps)
			sm.HTTPOnly = append(sm.HTTPOnly, hs)
			sm.PlainFour = append(sm.PlainFour, fs)
			sm.WebappFirst = append(sm.WebappFirst, order[0] == 0)
			t.Logf("round %d %s: webapp %.0f req/s (p99 %v, CPU %v/req), plain %.0f req/s (p99 %v, CPU %v/req), webapp http only %.0f req/s (CPU %v/req), plain four %.0f req/s (CPU %v/req), ratios %.3f, %.3f",
				round+1, m, ws.RPS, ws.P99, ws.CPUPerRequest(), ps.RPS, ps.P99, ps.CPUPerRequest(), hs.RPS, hs.CPUPerRequest(), fs.RPS, fs.CPUPerRequest(), ws.RPS/ps.RPS, ws.RPS/fs.RPS)
		}
	}
	return s
}

// measured is a load run and the server's CPU time over it.
type measured struct {
	res *load.Result
	cpu time.Duration
}

// procCPU is ProcCPU, failing the test on error.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	d, err := ProcCPU(pid)
	if err != nil {
		t.Fatalf("CPU time of pid %d: %v", pid, err)
	}
	return d
}

// merged summarises several runs as one.
func merged(runs []measured) RunStats {
	var st RunStats
	var elapsed time.Duration
	var lat []time.Duration
	for _, m := range runs {
		r := m.res
		st.CPU += m.cpu
		st.Requests += r.Requests
		st.Failed += r.Failed()
		elapsed += r.Elapsed
		for _, x := range r.Samples {
			if x.Class == load.ClassOK {
				lat = append(lat, x.Latency)
			}
		}
	}
	if elapsed > 0 {
		st.RPS = float64(st.Requests) / elapsed.Seconds()
	}
	slices.Sort(lat)
	st.P50, st.P99 = load.Percentile(lat, 50), load.Percentile(lat, 99)
	return st
}

// maxSamples bounds the samples a disruption run keeps: over two minutes
// at 60,000 requests/s, 24 bytes each. A run that keeps fewer than it
// made fails the test rather than report statistics of part of it.
const maxSamples = 8_000_000

// disruptionRun runs load on url in mode while event runs n times on the
// configured schedule, and checks the schedule ran.
func disruptionRun(t testing.TB, e *benchEnv, url string, mode load.Mode, n int, event func(ctx context.Context, i int) error) *load.Result {
	t.Helper()
	cfg := e.cfg
	opts := load.Options{
		Clients:    cfg.clients,
		Mode:       mode,
		MaxSamples: maxSamples,
		Duration:   cfg.lead + time.Duration(n)*(cfg.every+15*time.Second) + cfg.tail,
		Schedule:   load.Schedule{Start: cfg.lead, Every: cfg.every, Count: n, Run: event},
		Tail:       cfg.tail,
	}
	res, err := load.Run(t.Context(), url, opts)
	if err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	if res.SamplesDropped > 0 {
		t.Errorf("load %s, %s: %d samples not kept: the latency statistics miss the end of the run", url, mode, res.SamplesDropped)
	}
	if len(res.Events) != n {
		t.Errorf("load %s, %s: %d events ran, want %d", url, mode, len(res.Events), n)
	}
	for _, ev := range res.Events {
		if ev.Error != "" {
			t.Logf("%s event %d: %s", mode, ev.Index, ev.Error)
		}
	}
	t.Logf("%s: %d requests (%.0f/s), %d failed %s, %d events, %d PIDs, steady p99 %v, around p99 %v",
		mode, res.Requests, res.RPS, res.Failed(), fmt.Sprint(byClass(res.Failures)), len(res.Events), len(res.PIDs), res.Steady.P99, Around(res).P99)
	return res
}
