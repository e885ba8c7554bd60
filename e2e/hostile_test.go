package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Hostile clients and resource exhaustion against webapp under a real
// systemd (issue 9): a drain ends by its own deadline whatever the
// clients do, and a process out of descriptors keeps serving what it can,
// logs the trouble once per burst, and fails a reload with the reason.

// rawConn is a client connection that speaks HTTP/1.1 by hand.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func (s *service) dialRaw(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), 5*time.Second)
	if err != nil {
		t.Fatalf("dial webapp.socket: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

// get sends GET path and waits up to timeout for the answer.
func (r *rawConn) get(path string, timeout time.Duration) (*http.Response, error) {
	r.c.SetDeadline(time.Now().Add(timeout))
	defer r.c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(r.c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return nil, err
	}
	_, err = r.br.Discard(int(resp.ContentLength))
	return resp, err
}

// slowloris sends a request header one byte a second, never finishing it.
func (s *service) slowloris(t *testing.T) {
	t.Helper()
	r := s.dialRaw(t)
	go func() {
		hdr := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 600)
		for i := range len(hdr) {
			if _, err := r.c.Write([]byte{hdr[i]}); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
}

// unread pipelines requests for / and never reads an answer; it returns
// once webapp is stuck writing answers (the connection stalled both ways
// for a second).
func (s *service) unread(t *testing.T) {
	t.Helper()
	r := s.dialRaw(t)
	r.c.(*net.TCPConn).SetReadBuffer(4096)
	req := []byte(strings.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 256))
	var written atomic.Int64
	go func() {
		for {
			n, err := r.c.Write(req)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	lastW, lastQ := int64(-1), -1
	deadline := time.Now().Add(30 * time.Second)
	for {
		time.Sleep(time.Second)
		w, q := written.Load(), inQueue(t, r.c)
		if w == lastW && q == lastQ {
			t.Logf("unread client: %d bytes of requests written, %d bytes of answers unread", w, q)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the unread client's connection never stalled")
		}
		lastW, lastQ = w, q
	}
}

// inQueue is how many bytes wait unread in c's receive queue.
func inQueue(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitJournalMatch polls webapp.service's journal until it has a line
// matching re, and returns the journal.
func (s *service) waitJournalMatch(t *testing.T, within time.Duration, re *regexp.Regexp) string {
	t.Helper()
	var j string
	waitFor(t, within, "a journal line matching "+re.String(), func() (bool, string) {
		j = s.journal(t)
		return re.MatchString(j), j
	})
	return j
}

// TestHostileStop: a slowloris, a client that never reads its answers and
// 1,000 connections that send nothing do not hold `systemctl stop` past
// webapp's drain deadline; webapp reports what it cut and systemd never
// has to kill it.
func TestHostileStop(t *testing.T) {
	t.Parallel()
	const drainTimeout = 3 * time.Second
	const silent = 1000
	s := startService(t, serviceOptions{ServiceDropIn: "TimeoutStopSec=10s\nEnvironment=WEBAPP_OPTS=--drain-timeout=" + drainTimeout.String()})
	resp, _ := s.get(t, "/")
	pid := resp.Header.Get("X-Webapp-Pid")
	fdsBefore, _ := s.procStatus(t, pid)

	s.slowloris(t)
	s.unread(t)
	opened := time.Now()
	for range silent {
		s.dialRaw(t)
	}
	waitFor(t, 20*time.Second, "webapp to accept every connection", func() (bool, string) {
		fds, _ := s.procStatus(t, pid)
		return fds >= fdsBefore+silent+2, fmt.Sprintf("%d fds open (%d before the clients)", fds, fdsBefore)
	})

	// Silent connections older than 5s at the end of the 1s idle grace
	// are closed by net/http's Shutdown, not counted at the deadline.
	exactIdle := time.Since(opened) < 3500*time.Millisecond
	stopTook := s.timedSystemctl(t, "stop", "webapp.service")
	re := regexp.MustCompile(`connections cut at the deadline: (\d+) cut \(and (\d+) idle closed\)`)
	j := s.waitJournalMatch(t, 10*time.Second, re)
	report := lastLine(j, "connections cut at the deadline")
	t.Logf("systemctl stop took %v (--drain-timeout=%v, TimeoutStopSec=10s); webapp reported: %s", stopTook, drainTimeout, report)
	// A stop's deadline moves on while connections leave (issue 11): on
	// a loaded machine the silent ones may turn 5 s old during the drain
	// and be closed by net/http then, which moves it, up to the stop's
	// own bound below TimeoutStopSec=.
	extended := strings.Contains(j, "deadline moved to")
	if stopTook > drainTimeout+4*time.Second && !extended || stopTook > 10*time.Second {
		t.Errorf("systemctl stop took %v, want about --drain-timeout=%v (or, with the deadline moved on while connections left, within TimeoutStopSec=10s)", stopTook, drainTimeout)
	}
	m := re.FindStringSubmatch(report)
	cut, _ := strconv.Atoi(m[1])
	idle, _ := strconv.Atoi(m[2])
	if cut != 2 || idle > silent || exactIdle && !extended && idle != silent {
		t.Errorf("webapp cut %d and closed %d idle, want 2 cut (the slowloris, the unread answers) and %d idle", cut, idle, silent)
	}
	if bad := killedBySystemd(j); len(bad) > 0 || strings.Contains(j, "Killing process") {
		t.Errorf("systemd had to end the stop: %q\n%s", bad, j)
	}
	p := s.show(t, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
	t.Logf("webapp.service after the stop: %v", p)
	// webapp exits by itself (CLD_EXITED = 1), status 1 for the cut.
	if p["ExecMainCode"] != "1" || p["Result"] == "timeout" || p["Result"] == "signal" {
		t.Errorf("webapp.service after the stop: %v, want its main process to have exited by itself (ExecMainCode=1)", p)
	}
}

// fdLimit is LimitNOFILE= for the exhaustion tests: webapp starts with
// about a dozen descriptors open, so a few dozen connections exceed it.
const fdLimit = 32

// fillFDs opens connections that each send one request, until one gets
// no answer within a second because webapp cannot accept it (EMFILE), or
// max are open. It returns the answered connections and the first
// unanswered one (nil if every one was answered).
func (s *service) fillFDs(t *testing.T, max int) (answered []*rawConn, queued *rawConn) {
	t.Helper()
	for range max {
		r := s.dialRaw(t)
		if _, err := r.get("/", time.Second); err != nil {
			return answered, r
		}
		answered = append(answered, r)
	}
	return answered, nil
}

// TestHostileAcceptExhaustion: with LimitNOFILE= too low for the
// connections offered, webapp keeps answering on the connections it has,
// answers the others once descriptors free up, and logs the accept errors
// once per burst instead of once per refused connection.
func TestHostileAcceptExhaustion(t *testing.T) {
	t.Parallel()
	const offered = 50
	s := startService(t, serviceOptions{ServiceDropIn: fmt.Sprintf("LimitNOFILE=%d", fdLimit)})
	resp, _ := s.get(t, "/")
	pid := resp.Header.Get("X-Webapp-Pid")
	fds, _ := s.procStatus(t, pid)
	t.Logf("webapp with LimitNOFILE=%d: %d descriptors open at start", fdLimit, fds)

	answered, queued := s.fillFDs(t, offered)
	if queued == nil {
		t.Fatalf("all %d connections answered with LimitNOFILE=%d, want some beyond the limit", offered, fdLimit)
	}
	// The rest queue in the kernel too.
	waiting := []*rawConn{queued}
	for len(answered)+len(waiting) < offered {
		waiting = append(waiting, s.dialRaw(t))
	}
	burst := regexp.MustCompile(`too many open files \(retrying with backoff`)
	s.waitJournalMatch(t, 10*time.Second, burst)
	t.Logf("%d connections answered, %d waiting to be accepted", len(answered), len(waiting))

	// webapp keeps serving the connections it accepted.
	for i, r := range answered {
		if resp, err := r.get("/", 5*time.Second); err != nil || resp.StatusCode != 200 {
			t.Errorf("second request on accepted connection %d: %v, %v; want 200", i, resp, err)
		}
	}
	// Free descriptors: the waiting connections are accepted and answered.
	for _, r := range answered {
		r.c.Close()
	}
	for i, r := range waiting {
		var resp *http.Response
		var err error
		if i == 0 { // it sent its request already
			r.c.SetDeadline(time.Now().Add(10 * time.Second))
			resp, err = http.ReadResponse(r.br, nil)
		} else {
			resp, err = r.get("/", 10*time.Second)
		}
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("waiting connection %d: %v, %v; want 200", i, resp, err)
		}
		r.c.Close()
	}
	// After a quiet second a fresh connection is served and ends the burst.
	time.Sleep(1500 * time.Millisecond)
	if resp, body := s.get(t, "/"); resp.StatusCode != 200 || body != "hello world\n" {
		t.Errorf("GET / after the burst = %d %q, want 200 hello world", resp.StatusCode, body)
	}
	end := regexp.MustCompile(`works again after (\d+) failures`)
	j := s.waitJournalMatch(t, 10*time.Second, end)
	warnings := strings.Count(j, "too many open files (retrying with backoff")
	failures := 0
	for _, m := range end.FindAllStringSubmatch(j, -1) {
		n, _ := strconv.Atoi(m[1])
		failures += n
	}
	t.Logf("%d connections beyond the limit, %d failed accepts, %d burst warnings; the journal:\n%s",
		len(waiting), failures, warnings, s.box.Journal(t, "-u", "webapp.service", "-o", "short-monotonic", "--grep", "accept"))
	if warnings < 1 || warnings > 3 {
		t.Errorf("%d burst warnings for %d failed accepts, want 1 to 3 (once per burst)", warnings, failures)
	}
	if strings.Contains(j, "http: Accept error") {
		t.Errorf("net/http logged accept errors itself, want them retried inside the drain:\n%s", j)
	}
}

// TestHostileReloadExhausted: a reload while webapp has almost no
// descriptor left cannot hand its sockets on; it fails with the reason,
// visibly, and the running generation keeps serving.
func TestHostileReloadExhausted(t *testing.T) {
	t.Parallel()
	s := startService(t, serviceOptions{ServiceDropIn: fmt.Sprintf("LimitNOFILE=%d\nTimeoutStartSec=20s", fdLimit)})
	resp, _ := s.get(t, "/")
	pid := resp.Header.Get("X-Webapp-Pid")

	answered, queued := s.fillFDs(t, 50)
	if queued == nil {
		t.Fatalf("all connections answered with LimitNOFILE=%d, want some beyond the limit", fdLimit)
	}
	// Leave one descriptor free, for the control connection of the
	// reload: the queued connection goes, and one accepted one.
	queued.c.Close()
	answered[0].c.Close()
	answered = answered[1:]
	waitFor(t, 10*time.Second, fmt.Sprintf("webapp to hold %d descriptors", fdLimit-1), func() (bool, string) {
		fds, _ := s.procStatus(t, pid)
		return fds == fdLimit-1, fmt.Sprintf("%d open", fds)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	out := s.reload(ctx)
	p := s.show(t, "ActiveState", "SubState", "MainPID", "StatusText")
	t.Logf("systemctl reload with %d of %d descriptors in use: exit %s after %v: %q; webapp.service %v",
		fdLimit-1, fdLimit, exitStatus(out.Err), out.Took.Round(time.Millisecond), out.Output, p)
	if out.Err == nil {
		t.Errorf("systemctl reload succeeded with the descriptors exhausted, want it to fail")
	}
	if p["MainPID"] != pid || p["ActiveState"] != "active" {
		t.Errorf("after the failed reload: %v, want MainPID=%s still active", p, pid)
	}
	// The reason reaches the reload command, and through it the journal,
	// and StatusText: the notifier's socket was opened at the start.
	j := s.waitJournalMatch(t, 10*time.Second, regexp.MustCompile(`reload failed: .*too many open files`))
	waitFor(t, 10*time.Second, "StatusText to say the reload failed", func() (bool, string) {
		p = s.show(t, "StatusText")
		return strings.Contains(p["StatusText"], "reload failed: ") && strings.Contains(p["StatusText"], "too many open files"), p["StatusText"]
	})
	t.Logf("the reload's reason: %s; StatusText=%q", lastLine(j, "reload failed: "), p["StatusText"])
	// The old generation keeps serving: on its connections, and on new
	// ones once descriptors are free.
	for i, r := range answered {
		if resp, err := r.get("/", 5*time.Second); err != nil || resp.StatusCode != 200 {
			t.Errorf("request on accepted connection %d after the failed reload: %v, %v; want 200", i, resp, err)
		}
		r.c.Close()
	}
	if resp, body := s.get(t, "/"); resp.StatusCode != 200 || resp.Header.Get("X-Webapp-Pid") != pid {
		t.Errorf("GET / after the failed reload = %d %q from pid %s, want 200 from pid %s", resp.StatusCode, body, resp.Header.Get("X-Webapp-Pid"), pid)
	}
	// With descriptors free again, the service reloads: the control
	// socket waited out its accept errors.
	rctx, rcancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer rcancel()
	again := s.reload(rctx)
	if again.Err != nil {
		t.Errorf("systemctl reload with descriptors free again: %v\n%s", again.Err, again.Output)
	} else if now := s.mainPID(t); now == pid {
		t.Errorf("systemctl reload with descriptors free again succeeded, but MainPID is still %s", pid)
	}
	t.Logf("systemctl reload with descriptors free again: exit %s after %v", exitStatus(again.Err), again.Took.Round(time.Millisecond))
	t.Logf("journal:\n%s", s.box.Journal(t, "-u", "webapp.service", "-o", "short-monotonic"))
}
