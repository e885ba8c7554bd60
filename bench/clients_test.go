package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The clients of scenario 6. h2load and ghz are run again and again
// until the scenario says stop, each run bounded in count and time; the
// UDP client is the benchmark's own, since it must count every datagram.

// maxClientRuns bounds how often one client program is started in one
// scenario run.
const maxClientRuns = 5000

// ghzVersion is the ghz that the benchmark installs (go install, into
// bin/tools at the top of the repository, outside every go.mod).
const ghzVersion = "v0.121.0"

// span is when one client run ran.
type span struct{ start, end time.Time }

// protoClient loads one socket until stop is closed, then returns what it
// counted and when each of its runs ran.
type protoClient interface {
	load(ctx context.Context, stop <-chan struct{}) (ProtoLoad, []span)
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// noteBad keeps the first requests not answered.
func noteBad(l *ProtoLoad, at time.Time, err string) {
	if len(l.FirstBad) < maxFailureRows {
		l.FirstBad = append(l.FirstBad, BadRequest{At: at, Error: oneLine(err)})
	}
}

// tally adds one occurrence of an error message to m.
func tally(m *map[string]int64, err string) {
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[oneLine(err)]++
}

// h2loadClient runs `h2load -c C -m 1 -n N URL` again and again. h2load
// does not reconnect after a GOAWAY (its remaining requests fail), so
// each run is short, and a run that overlaps a reload must still end
// with every request answered.
type h2loadClient struct {
	bin, url string
	// protocol is what h2load must say it spoke: "h2c" or "h2".
	protocol          string
	clients, requests int
}

// h2loadRunTimeout bounds one h2load run.
const h2loadRunTimeout = 60 * time.Second

func (c h2loadClient) args() []string {
	return []string{"-c", strconv.Itoa(c.clients), "-m", "1", "-n", strconv.Itoa(c.requests), c.url}
}

func (c h2loadClient) command() string { return "h2load " + strings.Join(c.args(), " ") }

func (c h2loadClient) load(ctx context.Context, stop <-chan struct{}) (ProtoLoad, []span) {
	name := "HTTP/2 cleartext (h2c)"
	if c.protocol == "h2" {
		name = "HTTP/2 over TLS (h2)"
	}
	l := ProtoLoad{Protocol: name, Client: "`" + c.command() + "`, run again and again", Unit: "requests"}
	var spans []span
	t0 := time.Now()
	for range maxClientRuns {
		if stopped(stop) || ctx.Err() != nil {
			break
		}
		rctx, cancel := context.WithTimeout(ctx, h2loadRunTimeout)
		s := time.Now()
		out, err := exec.CommandContext(rctx, c.bin, c.args()...).CombinedOutput()
		cancel()
		spans = append(spans, span{s, time.Now()})
		l.Runs++
		sum, perr := ParseH2load(out)
		if perr != nil {
			// Killed or failed to start: every request of it failed.
			l.Broken++
			l.Requests += int64(c.requests)
			tally(&l.Errors, errors.Join(err, perr).Error())
			noteBad(&l, s, fmt.Sprintf("a run of %d requests without a report: %v", c.requests, errors.Join(err, perr)))
			continue
		}
		if sum.Protocol != c.protocol {
			tally(&l.Errors, fmt.Sprintf("h2load spoke %q, want %q", sum.Protocol, c.protocol))
			sum.Status2xx = 0
		}
		if bad := sum.Total - min(sum.Status2xx, sum.Succeeded); bad > 0 {
			noteBad(&l, s, fmt.Sprintf("%d of the %d requests of a run that started then: %d failed, %d errored, %d timeout, %d 2xx", bad, sum.Total, sum.Failed, sum.Errored, sum.Timeout, sum.Status2xx))
		}
		l.Requests += sum.Total
		l.OK += min(sum.Status2xx, sum.Succeeded)
		l.Failed += sum.Failed
		l.Errored += sum.Errored
		l.Timeout += sum.Timeout
	}
	l.Elapsed = time.Since(t0)
	return l, spans
}

// ghzClient runs ghz, unary grpc.health.v1.Health/Check found by server
// reflection, for a duration (then waiting for the calls under way),
// again if the scenario is not over by then. ghz exits 0 even when calls
// fail: its JSON report is the outcome.
type ghzClient struct {
	bin, addr                string
	concurrency, connections int
	// chunk is the -z duration of one run.
	chunk time.Duration
}

func (c ghzClient) args() []string {
	return []string{"--insecure", "--call", "grpc.health.v1.Health/Check",
		"-c", strconv.Itoa(c.concurrency), "--connections", strconv.Itoa(c.connections),
		"-z", c.chunk.String(), "--duration-stop", "wait", "-O", "json", c.addr}
}

func (c ghzClient) command() string {
	args := c.args()
	args[len(args)-1] = "ADDR"
	for i, a := range args {
		if a == "-z" {
			args[i+1] = "D"
		}
	}
	return "ghz " + strings.Join(args, " ")
}

func (c ghzClient) load(ctx context.Context, stop <-chan struct{}) (ProtoLoad, []span) {
	l := ProtoLoad{Protocol: "gRPC unary `grpc.health.v1.Health/Check`", Client: "`" + c.command() + "` (D: the run's length)", Unit: "RPCs"}
	var spans []span
	t0 := time.Now()
	for range maxClientRuns {
		if stopped(stop) || ctx.Err() != nil {
			break
		}
		rctx, cancel := context.WithTimeout(ctx, c.chunk+60*time.Second)
		s := time.Now()
		cmd := exec.CommandContext(rctx, c.bin, c.args()...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		spans = append(spans, span{s, time.Now()})
		l.Runs++
		sum, perr := ParseGhz(out)
		if err != nil || perr != nil {
			l.Broken++
			tally(&l.Errors, errors.Join(cmdError(err, stderr.String()), perr).Error())
			continue
		}
		l.Requests += sum.Count
		l.OK += sum.OK()
		for k, v := range sum.Statuses {
			if l.Statuses == nil {
				l.Statuses = map[string]int64{}
			}
			l.Statuses[k] += v
		}
		for k, v := range sum.Errors {
			if l.Errors == nil {
				l.Errors = map[string]int64{}
			}
			l.Errors[oneLine(k)] += v
		}
		for _, d := range sum.Details {
			if d.Status != "OK" {
				noteBad(&l, d.Timestamp, d.Status+": "+d.Error)
			}
		}
	}
	l.Elapsed = time.Since(t0)
	return l, spans
}

// udpClient sends numbered datagrams from several sockets, each waiting
// for the answer to its last before it sends the next, and counts every
// datagram sent, answered (by which pid) and not answered within wait.
type udpClient struct {
	addr    string
	senders int
	wait    time.Duration
}

func (c udpClient) load(ctx context.Context, stop <-chan struct{}) (ProtoLoad, []span) {
	l := ProtoLoad{Protocol: "UDP datagrams", Client: fmt.Sprintf("the benchmark's own: %d sockets, each sending a numbered datagram once the last was answered (or after %s without answer)", c.senders, fmtDur(c.wait)), Unit: "datagrams", PIDs: map[int]int64{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for id := range c.senders {
		wg.Go(func() {
			var own ProtoLoad
			own.PIDs = map[int]int64{}
			c.send(ctx, stop, id, &own)
			mu.Lock()
			defer mu.Unlock()
			l.Requests += own.Requests
			l.OK += own.OK
			l.Late += own.Late
			l.MaxWait = max(l.MaxWait, own.MaxWait)
			for _, b := range own.FirstBad {
				noteBad(&l, b.At, b.Error)
			}
			for k, v := range own.Errors {
				if l.Errors == nil {
					l.Errors = map[string]int64{}
				}
				l.Errors[k] += v
			}
			for pid, n := range own.PIDs {
				l.PIDs[pid] += n
			}
		})
	}
	wg.Wait()
	l.Elapsed = time.Since(t0)
	l.Runs = 1
	return l, []span{{t0, time.Now()}}
}

func (c udpClient) send(ctx context.Context, stop <-chan struct{}, id int, l *ProtoLoad) {
	conn, err := net.Dial("udp", c.addr)
	if err != nil {
		tally(&l.Errors, err.Error())
		return
	}
	defer conn.Close()
	buf := make([]byte, 512)
	for seq := 0; !stopped(stop) && ctx.Err() == nil; seq++ {
		msg := []byte(fmt.Sprintf("bench %d %d", id, seq))
		sent := time.Now()
		l.Requests++
		if _, err := conn.Write(msg); err != nil {
			tally(&l.Errors, "write: "+err.Error())
			noteBad(l, sent, "write: "+err.Error())
			time.Sleep(10 * time.Millisecond)
			continue
		}
		conn.SetReadDeadline(sent.Add(c.wait))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				e := fmt.Sprintf("no answer within %s: %v", fmtDur(c.wait), errors.Unwrap(err))
				tally(&l.Errors, e)
				noteBad(l, sent, fmt.Sprintf("%q: %s", msg, e))
				break
			}
			pid, err := ParseUDPAnswer(buf[:n], msg)
			if err != nil {
				// An answer to an earlier datagram, late: that one was
				// already counted as not answered.
				continue
			}
			waited := time.Since(sent)
			l.OK++
			l.PIDs[pid]++
			l.MaxWait = max(l.MaxWait, waited)
			if waited > time.Second {
				l.Late++
			}
			break
		}
	}
}

// requireTool returns the path of an external program the benchmark
// needs. Missing: with CI=true the test fails, otherwise it is skipped
// with one line saying how to get it.
func requireTool(t *testing.T, name, how string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	missing(t, fmt.Sprintf("%s not found (%s)", name, how))
	return ""
}

// missing applies the project's policy to a missing dependency: fail with
// CI=true, else skip with one line.
func missing(t *testing.T, why string) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("bench: CI=true but %s", why)
	}
	t.Skipf("bench: %s; `make deps` installs it, then run `sudo make bench-smoke`", why)
}

// ensureGhz returns the path of ghz ghzVersion, installing it first with
// go install into bin/tools/ghz-VERSION at the top of the repository
// (outside every go.mod) when it is not there.
func ensureGhz(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "bin", "tools", "ghz-"+ghzVersion))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ghz")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/bojand/ghz/cmd/ghz@"+ghzVersion)
	cmd.Dir = os.TempDir() // no go.mod of ours takes part
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=")
	t.Logf("installing ghz %s into %s", ghzVersion, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		missing(t, fmt.Sprintf("ghz %s could not be installed: go install: %v: %s", ghzVersion, err, oneLine(lastLines(string(out), 3))))
	}
	return bin
}
