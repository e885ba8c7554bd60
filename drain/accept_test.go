package drain_test

import (
	"bytes"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
)

// faultyListener fails the accepts it is told to with a real errno, as the
// kernel does when the process is out of descriptors.
type faultyListener struct {
	net.Listener
	errno syscall.Errno

	mu       sync.Mutex
	fail     int // accepts still to fail
	failures int // accepts failed so far
}

func (l *faultyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fail > 0 {
		l.fail--
		l.failures++
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.errno)}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// arm makes the next n accepts fail.
func (l *faultyListener) arm(n int) {
	l.mu.Lock()
	l.fail += n
	l.mu.Unlock()
}

func (l *faultyListener) failed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures
}

// logRecorder is a drain.Logger that keeps what it is given.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) add(level, format string, args ...any) {
	r.mu.Lock()
	r.lines = append(r.lines, level+": "+fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *logRecorder) Infof(format string, args ...any) { r.add("info", format, args...) }
func (r *logRecorder) Warnf(format string, args ...any) { r.add("warn", format, args...) }

// matching returns the lines at level that contain sub.
func (r *logRecorder) matching(level, sub string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var m []string
	for _, l := range r.lines {
		if strings.HasPrefix(l, level+": ") && strings.Contains(l, sub) {
			m = append(m, l)
		}
	}
	return m
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// syncBuffer is a bytes.Buffer for a log.Logger used by several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A burst of temporary accept errors is retried inside the Drainer's
// listener and logged once when it begins and once when accepting works
// again; net/http never sees one, so it logs nothing per error.
func TestAcceptErrorBurstLoggedOnce(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		t.Run(errno.Error(), func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fl := &faultyListener{Listener: ln, errno: errno}
			rec := &logRecorder{}
			var httpLog syncBuffer
			d := drain.New(drain.Options{IdleGrace: -1, Logger: rec})
			srv := &http.Server{Handler: slowMux(), ErrorLog: log.New(&httpLog, "", 0)}
			done := make(chan error, 1)
			go func() { done <- d.Serve(srv, fl) }()
			t.Cleanup(func() { srv.Close() })
			addr := ln.Addr().String()

			const burst = 6 // 5+10+20+40+80+160 ms of backoff
			for b := 1; b <= 2; b++ {
				fl.arm(burst)
				// This connection is accepted; the accepts after it fail.
				c := dial(t, addr)
				c.c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, body, err := c.get("/"); err != nil || body != "hello world\n" {
					t.Fatalf("burst %d: GET / before the errors = %q, %v; want hello world", b, body, err)
				}
				waitUntil(t, 10*time.Second, fmt.Sprintf("%d failed accepts", b*burst), func() bool { return fl.failed() == b*burst })
				time.Sleep(1100 * time.Millisecond) // a quiet second ends the burst
				c = dial(t, addr)
				c.c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, body, err := c.get("/"); err != nil || body != "hello world\n" {
					t.Fatalf("burst %d: GET / after the errors = %q, %v; want hello world", b, body, err)
				}
				if got := rec.matching("warn", errno.Error()); len(got) != b {
					t.Errorf("after burst %d of %d %v errors: %d warnings %q, want %d\n%s", b, burst, errno, len(got), got, b, rec)
				}
				waitUntil(t, 5*time.Second, "the end of the burst logged", func() bool {
					return len(rec.matching("info", fmt.Sprintf("works again after %d failures", burst))) == b
				})
			}
			if s := httpLog.String(); s != "" {
				t.Errorf("net/http logged:\n%s\nwant nothing: the Drainer's listener retries", s)
			}
			t.Logf("%d %v errors in 2 bursts; the drain logged:\n%s", fl.failed(), errno, rec)
		})
	}
}

// A listener closed while it backs off from accept errors makes Serve
// return at once, not after the backoff.
func TestAcceptBackoffEndsAtClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &faultyListener{Listener: ln, errno: syscall.EMFILE}
	rec := &logRecorder{}
	d := drain.New(drain.Options{IdleGrace: -1, Logger: rec})
	srv := &http.Server{Handler: slowMux()}
	done := make(chan error, 1)
	go func() { done <- d.Serve(srv, fl) }()
	defer srv.Close()
	// Accept is under way once a first request is answered: the accepts
	// after the second connection fail.
	for i := range 2 {
		c := dial(t, ln.Addr().String())
		c.c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.get("/"); err != nil {
			t.Fatalf("GET / %d: %v", i+1, err)
		}
		if i == 0 {
			fl.arm(1 << 20)
		}
	}
	// From the 9th failure on the backoff is a full second.
	waitUntil(t, 10*time.Second, "9 failed accepts", func() bool { return fl.failed() >= 9 })
	start := time.Now()
	d.StopAccepting()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after StopAccepting")
	}
	took := time.Since(start)
	t.Logf("Serve returned %v after StopAccepting, %d failed accepts", took, fl.failed())
	if took > 800*time.Millisecond {
		t.Errorf("Serve returned %v after StopAccepting, want well within the 1s backoff", took)
	}
	if got := rec.matching("info", "stopped"); len(got) != 1 {
		t.Errorf("log after the close: %q, want one line saying that accepting stopped\n%s", got, rec)
	}
}
