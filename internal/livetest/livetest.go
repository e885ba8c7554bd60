// Package livetest drives webapp's long-lived endpoints (GET /ws and GET
// /events, package live) with clients nobody here wrote: WebSocket clients
// built on Debian's python3-websockets and server-sent-event clients on
// Python's http.client, run by clients.py under Debian's /usr/bin/python3
// in several processes (asyncio, a few hundred connections each). The e2e
// tests and the benchmark share it.
package livetest

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

//go:embed clients.py
var script []byte

// Python is Debian's interpreter, which has python3-websockets (the
// machine's python3 on PATH may be another build without it).
const Python = "/usr/bin/python3"

// Check says why the clients cannot run here: no Debian python3, or no
// python3-websockets (`make deps` installs it).
func Check() error {
	out, err := exec.Command(Python, "-c", "import websockets; print(websockets.__version__)").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s cannot import websockets (Debian's python3-websockets; `make deps` as root installs it): %v: %s", Python, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Require applies the project's policy to Check: the test fails with
// CI=true and skips, saying why, otherwise.
func Require(t testing.TB) {
	t.Helper()
	if err := Check(); err != nil {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("%v (CI=true)", err)
		}
		t.Skipf("%v", err)
	}
}

// Options says which clients to run against one address.
type Options struct {
	Host string // default 127.0.0.1
	Port int
	// WS WebSocket clients, SSE event-stream clients and Stubborn
	// clients that ignore close frames; Slow clients answer the server's
	// close frame only after i*SlowStep (i = 1..Slow), so that they leave
	// one after another.
	WS, SSE, Stubborn, Slow int
	SlowStep                time.Duration
	// PerProcess is how many WebSocket clients one Python process runs
	// (default 125); SSE and stubborn clients get a process of their own.
	PerProcess int
	// Interval between two messages of a WebSocket client (default 100ms).
	Interval time.Duration
	// NoReconnect: a WebSocket client ends at its first close.
	NoReconnect bool
	// Settle bounds the wait for the echoes still owed at the end
	// (default 10s).
	Settle time.Duration
	// Duration bounds the run, in case Stop is never called (default 10m).
	Duration time.Duration
}

// Clients is a run of client processes.
type Clients struct {
	dir   string
	procs []*proc
}

type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr strings.Builder
	lines  chan string
	early  []string // report lines read by WaitSettled, for Stop
	done   chan error
}

// Start starts the client processes and returns once each has said it
// is running (their connections are being opened then).
func Start(ctx context.Context, o Options) (*Clients, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.PerProcess <= 0 {
		o.PerProcess = 125
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Minute
	}
	dir, err := os.MkdirTemp("/var/tmp", "baton-livetest-")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "clients.py")
	if err := os.WriteFile(path, script, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &Clients{dir: dir}
	common := []string{path, "--host", o.Host, "--port", strconv.Itoa(o.Port),
		"--interval", ftoa(o.Interval), "--settle", ftoa(o.Settle), "--duration", ftoa(o.Duration)}
	if o.NoReconnect {
		common = append(common, "--no-reconnect")
	}
	var runs [][]string
	for base := 0; base < o.WS; base += o.PerProcess {
		n := min(o.PerProcess, o.WS-base)
		runs = append(runs, []string{"--ws", strconv.Itoa(n), "--base", strconv.Itoa(base)})
	}
	if o.SSE > 0 {
		runs = append(runs, []string{"--sse", strconv.Itoa(o.SSE), "--base", "200000"})
	}
	if o.Stubborn > 0 || o.Slow > 0 {
		if o.SlowStep <= 0 {
			o.SlowStep = 600 * time.Millisecond
		}
		runs = append(runs, []string{"--stubborn", strconv.Itoa(o.Stubborn), "--slow", strconv.Itoa(o.Slow),
			"--slow-step", ftoa(o.SlowStep), "--base", "300000"})
	}
	for _, args := range runs {
		p, err := c.start(ctx, append(slices.Clone(common), args...))
		if err != nil {
			c.kill()
			return nil, err
		}
		c.procs = append(c.procs, p)
	}
	for _, p := range c.procs {
		select {
		case line, ok := <-p.lines:
			if !ok || !strings.Contains(line, `"ready"`) {
				c.kill()
				return nil, fmt.Errorf("livetest: client process did not start: %q %s", line, p.stderr.String())
			}
		case <-time.After(30 * time.Second):
			c.kill()
			return nil, errors.New("livetest: client process not running after 30 s")
		}
	}
	return c, nil
}

func ftoa(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

func (c *Clients) start(ctx context.Context, args []string) (*proc, error) {
	p := &proc{cmd: exec.CommandContext(ctx, Python, args...), lines: make(chan string, 1024), done: make(chan error, 1)}
	p.cmd.Stderr = &lockedWriter{b: &p.stderr}
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.stdin = stdin
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p, nil
}

// lockedWriter guards a strings.Builder written by exec's copier.
type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 64<<10 {
		w.b.Write(b)
	}
	return len(b), nil
}

func (c *Clients) kill() {
	for _, p := range c.procs {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
	os.RemoveAll(c.dir)
}

// WaitSettled waits, up to timeout in all, until every client of every
// process is settled: each WebSocket client has had its first echo, each
// stubborn or slow client the echo of the message it sends after the
// handshake, each SSE client its first event. The server then holds each
// connection as what it is (hijacked, streaming) rather than as a
// request it is still answering. Stop still collects the reports.
func (c *Clients) WaitSettled(timeout time.Duration) error {
	deadline := time.After(timeout)
	for i, p := range c.procs {
	read:
		for {
			select {
			case line, ok := <-p.lines:
				if !ok {
					return fmt.Errorf("livetest: client process %d ended before its clients settled: %s", i, p.stderr.String())
				}
				if strings.HasPrefix(line, `{"settled"`) {
					break read
				}
				p.early = append(p.early, line)
			case <-deadline:
				return fmt.Errorf("livetest: the clients of process %d of %d were not all settled within %v", i+1, len(c.procs), timeout)
			}
		}
	}
	return nil
}

// Stop tells every client to stop (end of its standard input), waits for
// the echoes owed and the processes' reports, and returns them.
func (c *Clients) Stop(timeout time.Duration) (*Result, error) {
	defer os.RemoveAll(c.dir)
	for _, p := range c.procs {
		p.stdin.Close()
	}
	r := &Result{}
	var errs []error
	deadline := time.After(timeout)
	for _, p := range c.procs {
		finished := false
		for _, line := range p.early {
			if err := r.add(line); err != nil {
				errs = append(errs, err)
			}
		}
	read:
		for {
			select {
			case line, ok := <-p.lines:
				if !ok {
					break read
				}
				if strings.HasPrefix(line, `{"done"`) {
					finished = true
					continue
				}
				if strings.HasPrefix(line, `{"settled"`) {
					continue
				}
				if err := r.add(line); err != nil {
					errs = append(errs, err)
				}
			case <-deadline:
				p.cmd.Process.Kill()
				errs = append(errs, fmt.Errorf("livetest: client process did not end within %v", timeout))
				break read
			}
		}
		if err := p.cmd.Wait(); err != nil && finished {
			errs = append(errs, fmt.Errorf("livetest: client process: %v: %s", err, p.stderr.String()))
		}
		if !finished {
			errs = append(errs, fmt.Errorf("livetest: a client process ended without its report: %s", p.stderr.String()))
		}
	}
	return r, errors.Join(errs...)
}

// Connect is a connection a client opened: when, and to which process
// (X-Webapp-Pid of the answer).
type Connect struct {
	At  time.Time
	PID string
}

// WS is one WebSocket client's report.
type WS struct {
	CID                  int
	Sent, Resent, Echoed int
	Dup                  int // echoes of messages not outstanding
	Lost                 int // never echoed, resends included
	// LostBeforeEcho is how many of the lost were sent before a message
	// that was echoed: dropped by the server after it read past them.
	LostBeforeEcho int
	Clean          int // closes 1001 with the closing handshake
	Abnormal       int // any other close (1006: no close frame), errors
	AbnormalWhat   []string
	ConnectErrors  int
	Connects       []Connect
	CloseCodes     []int
}

// SSE is one event-stream client's report.
type SSE struct {
	CID                       int
	Events, Missing, Repeated int
	Streams, Errors           int
	ErrorWhat                 []string
	Last                      int
	Connects                  []Connect
}

// Stubborn is the report of a client that ignores close frames, or of a
// slow one (Slow) that answers the first one late.
type Stubborn struct {
	CID         int
	Slow        bool
	Connected   bool // the opening handshake succeeded
	CloseFrames int  // close frames received
	Cut         bool // the server closed the connection
	CutAt       time.Time
	AnsweredAt  time.Time // when a slow client answered the close frame
	Error       string
}

// Result is every client's report.
type Result struct {
	WS       []WS
	SSE      []SSE
	Stubborn []Stubborn // the stubborn and the slow ones
}

type rawReport struct {
	Kind          string   `json:"kind"`
	CID           int      `json:"cid"`
	Sent          int      `json:"sent"`
	Resent        int      `json:"resent"`
	Echoed        int      `json:"echoed"`
	Dup           int      `json:"dup"`
	Lost          int      `json:"lost"`
	LostBefore    int      `json:"lost_before_echo"`
	Clean         int      `json:"clean"`
	Abnormal      int      `json:"abnormal"`
	AbnormalWhat  []string `json:"abnormal_what"`
	ConnectErrors int      `json:"connect_errors"`
	Connects      [][2]any `json:"connects"`
	Closes        [][2]any `json:"closes"`
	Events        int      `json:"events"`
	Missing       int      `json:"missing"`
	Repeated      int      `json:"repeated"`
	Streams       int      `json:"streams"`
	Errors        int      `json:"errors"`
	ErrorWhat     []string `json:"error_what"`
	Last          int      `json:"last"`
	Connected     bool     `json:"connected"`
	CloseFrames   int      `json:"close_frames"`
	Cut           bool     `json:"cut"`
	CutAt         float64  `json:"cut_at"`
	AnsweredAt    float64  `json:"answered_at"`
	Error         string   `json:"error"`
	Ready         *bool    `json:"ready"`
}

func unixTime(f float64) time.Time {
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9))
}

func connects(raw [][2]any) []Connect {
	var cs []Connect
	for _, c := range raw {
		at, _ := c[0].(float64)
		pid, _ := c[1].(string)
		cs = append(cs, Connect{At: unixTime(at), PID: pid})
	}
	return cs
}

func (r *Result) add(line string) error {
	var raw rawReport
	if err := json.Unmarshal([]byte(line), &raw); err != nil {
		return fmt.Errorf("livetest: report %q: %w", line, err)
	}
	switch raw.Kind {
	case "ws":
		w := WS{CID: raw.CID, Sent: raw.Sent, Resent: raw.Resent, Echoed: raw.Echoed, Dup: raw.Dup, Lost: raw.Lost, LostBeforeEcho: raw.LostBefore,
			Clean: raw.Clean, Abnormal: raw.Abnormal, AbnormalWhat: raw.AbnormalWhat, ConnectErrors: raw.ConnectErrors,
			Connects: connects(raw.Connects)}
		for _, c := range raw.Closes {
			code, _ := c[1].(float64)
			w.CloseCodes = append(w.CloseCodes, int(code))
		}
		r.WS = append(r.WS, w)
	case "sse":
		r.SSE = append(r.SSE, SSE{CID: raw.CID, Events: raw.Events, Missing: raw.Missing, Repeated: raw.Repeated,
			Streams: raw.Streams, Errors: raw.Errors, ErrorWhat: raw.ErrorWhat, Last: raw.Last, Connects: connects(raw.Connects)})
	case "stubborn", "slow":
		s := Stubborn{CID: raw.CID, Slow: raw.Kind == "slow", Connected: raw.Connected, CloseFrames: raw.CloseFrames, Cut: raw.Cut, Error: raw.Error}
		if raw.CutAt > 0 {
			s.CutAt = unixTime(raw.CutAt)
		}
		if raw.AnsweredAt > 0 {
			s.AnsweredAt = unixTime(raw.AnsweredAt)
		}
		r.Stubborn = append(r.Stubborn, s)
	case "":
		if raw.Ready == nil {
			return fmt.Errorf("livetest: report without a kind: %q", line)
		}
	default:
		return fmt.Errorf("livetest: report of kind %q", raw.Kind)
	}
	return nil
}

// Totals sums the reports.
type Totals struct {
	WS, Sent, Resent, Echoed, Dup, Lost, Clean, Abnormal, ConnectErrors, Connects int
	LostBeforeEcho                                                                int
	SSE, Events, Missing, Repeated, Streams, SSEErrors                            int
	Examples                                                                      []string // a few abnormal closes or errors
}

// Totals sums the reports of every client.
func (r *Result) Totals() Totals {
	var t Totals
	for _, w := range r.WS {
		t.WS++
		t.Sent += w.Sent
		t.Resent += w.Resent
		t.Echoed += w.Echoed
		t.Dup += w.Dup
		t.Lost += w.Lost
		t.LostBeforeEcho += w.LostBeforeEcho
		t.Clean += w.Clean
		t.Abnormal += w.Abnormal
		t.ConnectErrors += w.ConnectErrors
		t.Connects += len(w.Connects)
		for _, s := range w.AbnormalWhat {
			if len(t.Examples) < 5 {
				t.Examples = append(t.Examples, fmt.Sprintf("ws %d: %s", w.CID, s))
			}
		}
	}
	for _, s := range r.SSE {
		t.SSE++
		t.Events += s.Events
		t.Missing += s.Missing
		t.Repeated += s.Repeated
		t.Streams += s.Streams
		t.SSEErrors += s.Errors
		for _, e := range s.ErrorWhat {
			if len(t.Examples) < 10 {
				t.Examples = append(t.Examples, fmt.Sprintf("sse %d: %s", s.CID, e))
			}
		}
	}
	return t
}

func (t Totals) String() string {
	return fmt.Sprintf("WebSocket: %d clients, %d sent (%d resent), %d echoed, %d lost, %d duplicate echoes, %d clean closes (1001), %d abnormal, %d connect errors, %d connections; SSE: %d clients, %d events, %d ids missing, %d repeated, %d streams, %d errors",
		t.WS, t.Sent, t.Resent, t.Echoed, t.Lost, t.Dup, t.Clean, t.Abnormal, t.ConnectErrors, t.Connects,
		t.SSE, t.Events, t.Missing, t.Repeated, t.Streams, t.SSEErrors)
}

// Generation is a process that took over at a moment: the reconnect
// latency of a client is from At to its first connection to PID.
type Generation struct {
	PID string
	At  time.Time
}

// Reconnects returns, for every generation and every WebSocket client,
// how long after the generation's At the client first connected to it
// (negative when before), and how many pairs never connected.
func (r *Result) Reconnects(gens []Generation) (lat []time.Duration, never int) {
	for _, g := range gens {
		for _, w := range r.WS {
			i := slices.IndexFunc(w.Connects, func(c Connect) bool { return c.PID == g.PID })
			if i < 0 {
				never++
				continue
			}
			lat = append(lat, w.Connects[i].At.Sub(g.At))
		}
	}
	slices.Sort(lat)
	return lat, never
}

// Quantile returns the q-quantile of sorted durations (0 for none).
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
