//go:build linux

package drain_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
)

// childEnv marks the test binary re-executed as the server of
// TestAcceptRealEMFILE, with a descriptor limit of its own.
const childEnv = "DRAIN_TEST_EMFILE_CHILD"

// stdoutLogger prints the drain's log lines for the parent to read.
type stdoutLogger struct{ mu sync.Mutex }

func (l *stdoutLogger) Infof(format string, args ...any) { l.print("info", format, args...) }
func (l *stdoutLogger) Warnf(format string, args ...any) { l.print("warn", format, args...) }
func (l *stdoutLogger) print(level, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Printf("LOG %s: %s\n", level, fmt.Sprintf(format, args...))
}

// emfileChild serves with RLIMIT_NOFILE a few descriptors above what it
// has open, until its stdin closes.
func emfileChild() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERR", err)
		return
	}
	es, _ := os.ReadDir("/proc/self/fd")
	limit := uint64(len(es) + 8)
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	rl.Cur = limit
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Println("ERR", err)
		return
	}
	d := drain.New(drain.Options{Logger: &stdoutLogger{}})
	srv := &http.Server{Handler: slowMux()}
	go d.Serve(srv, ln)
	fmt.Printf("ADDR %s %d\n", ln.Addr(), limit)
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

// TestAcceptRealEMFILE runs a server out of descriptors for real (the
// test binary re-executed with a low RLIMIT_NOFILE): it keeps serving the
// connections it has, serves the others once descriptors free up, and
// logs the burst once.
func TestAcceptRealEMFILE(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		emfileChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptRealEMFILE$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var logs []string
	next := func(prefix string) string {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the child ended before a line %q; its log: %q", prefix, logs)
				}
				if strings.HasPrefix(l, "ERR") {
					t.Fatalf("child: %s", l)
				}
				if strings.HasPrefix(l, "LOG ") {
					logs = append(logs, l)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("no line %q from the child within 15s; its log: %q", prefix, logs)
			}
		}
	}
	var addr string
	var limit int
	fmt.Sscanf(next("ADDR "), "ADDR %s %d", &addr, &limit)

	const offered = 30
	var answered, waiting []*client
	for range offered {
		c := dial(t, addr)
		if len(waiting) > 0 { // the rest wait too
			c.send("/")
			waiting = append(waiting, c)
			continue
		}
		c.c.SetDeadline(time.Now().Add(time.Second))
		if _, _, err := c.get("/"); err != nil {
			waiting = append(waiting, c)
			continue
		}
		c.c.SetDeadline(time.Time{})
		answered = append(answered, c)
	}
	t.Logf("RLIMIT_NOFILE=%d: %d of %d connections answered", limit, len(answered), offered)
	if len(waiting) == 0 {
		t.Fatalf("every connection answered with RLIMIT_NOFILE=%d, want some beyond it", limit)
	}
	next("LOG warn: ")
	for i, c := range answered {
		c.c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, body, err := c.get("/"); err != nil || body != "hello world\n" {
			t.Errorf("second request on accepted connection %d: %q, %v; want hello world", i, body, err)
		}
		c.c.Close()
	}
	// The waiting connections are answered as descriptors free up (each
	// closed after its answer, to free one more).
	for i, c := range waiting {
		c.c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, body, err := c.read(); err != nil || body != "hello world\n" {
			t.Errorf("waiting connection %d: %q, %v; want hello world once descriptors are free", i, body, err)
		}
		c.c.Close()
	}
	time.Sleep(1500 * time.Millisecond)
	c := dial(t, addr)
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, body, err := c.get("/"); err != nil || body != "hello world\n" {
		t.Fatalf("GET / after the burst: %q, %v; want hello world", body, err)
	}
	end := next("LOG info: ")
	warns := 0
	for _, l := range logs {
		if strings.HasPrefix(l, "LOG warn: ") {
			warns++
		}
	}
	t.Logf("the child logged:\n%s", strings.Join(logs, "\n"))
	if warns != 1 || !strings.Contains(logs[0], "too many open files") || !strings.Contains(end, "works again after") {
		t.Errorf("the child logged %q, want one warning with too many open files, then works again", logs)
	}
}
