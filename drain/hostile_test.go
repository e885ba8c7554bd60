//go:build linux

package drain_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
)

// Hostile clients during a drain: each kind alone and all together. The
// drain ends by its deadline, Cut counts the connections with a request
// under way (a header part-sent, an answer the client never reads), Idle
// the ones that never sent a byte, and no descriptor is left open.

// hostile is a misbehaving client: start connects it and returns once its
// connection is in the state the test wants.
type hostile struct {
	name  string
	start func(t *testing.T, s *served) []net.Conn
	cut   int // connections Shutdown must count as cut
	idle  int // and as idle
}

// slowloris sends a request header one byte at a time and never ends it.
func slowloris(t *testing.T, s *served) []net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan struct{})
	go func() {
		hdr := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)
		for i := range len(hdr) {
			if _, err := c.Write([]byte{hdr[i]}); err != nil {
				return
			}
			if i == 2 {
				close(sent)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	<-sent
	return []net.Conn{c}
}

// unread pipelines requests and never reads an answer, until the server
// is stuck writing answers (the client's own writes stall).
func unread(t *testing.T, s *served) []net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetReadBuffer(4096)
	req := []byte(strings.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 256))
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		for {
			n, err := c.Write(req)
			written.Add(int64(n))
			if err != nil {
				werr <- err
				return
			}
		}
	}()
	// Stuck: for a second the server has handled no request, and it holds
	// answers it cannot send.
	deadline := time.Now().Add(30 * time.Second)
	last := int64(-1)
	for {
		time.Sleep(time.Second)
		select {
		case err := <-werr:
			t.Fatalf("the unread client's requests: %v after %d bytes, want them to stall", err, written.Load())
		default:
		}
		n := s.requests.Load()
		if n == last && s.d.Unsent() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unread client's connection never stalled")
		}
		last = n
	}
	return []net.Conn{c}
}

// silent opens n connections and sends nothing.
func silent(n int) func(t *testing.T, s *served) []net.Conn {
	return func(t *testing.T, s *served) []net.Conn {
		t.Helper()
		cs := make([]net.Conn, 0, n)
		for range n {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatalf("dial %d of %d silent connections: %v", len(cs)+1, n, err)
			}
			cs = append(cs, c)
		}
		return cs
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestHostileClientsDuringDrain(t *testing.T) {
	const silentN = 1000
	kinds := map[string]hostile{
		"slowloris": {name: "slowloris", start: slowloris, cut: 1},
		"unread":    {name: "unread", start: unread, cut: 1},
		"silent":    {name: "silent", start: silent(silentN), idle: silentN},
	}
	tests := []struct {
		name  string
		kinds []string
		age   time.Duration // how long the clients are connected before the drain
	}{
		{name: "slowloris", kinds: []string{"slowloris"}},
		{name: "unread response", kinds: []string{"unread"}},
		{name: "1000 silent", kinds: []string{"silent"}},
		{name: "all together", kinds: []string{"slowloris", "unread", "silent"}},
		// net/http's Shutdown closes a connection still in its first
		// header after 5s as if idle: it is still counted as cut.
		{name: "slowloris and unread older than 5s", kinds: []string{"slowloris", "unread"}, age: 5500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := openFDs(t)
			s := serve(t, drain.Options{IdleGrace: 100 * time.Millisecond})
			var conns []net.Conn
			wantCut, wantIdle := 0, 0
			setup := time.Now()
			for _, k := range tt.kinds {
				h := kinds[k]
				conns = append(conns, h.start(t, s)...)
				wantCut += h.cut
				wantIdle += h.idle
			}
			waitUntil(t, 10*time.Second, fmt.Sprintf("%d connections tracked", len(conns)), func() bool {
				return s.d.Connections() == len(conns)
			})

			time.Sleep(tt.age - time.Since(setup))
			// Silent connections connected more than 5s before are closed
			// by net/http's Shutdown at the end of the grace, before the
			// deadline counts them.
			exactIdle := time.Since(setup) < 4*time.Second

			const deadline = 800 * time.Millisecond
			rep, err := shutdown(t, s.d, deadline)
			t.Logf("%s: Shutdown() = %+v, %v", tt.name, rep, err)
			if rep.Duration > deadline+2*time.Second {
				t.Errorf("Shutdown() took %v, want about the %v deadline", rep.Duration, deadline)
			}
			if rep.Cut != wantCut {
				t.Errorf("Shutdown() = %+v, want Cut %d", rep, wantCut)
			}
			if exactIdle && rep.Idle != wantIdle || rep.Idle > wantIdle {
				t.Errorf("Shutdown() = %+v, want Idle %d", rep, wantIdle)
			}
			if wantCut > 0 && !errors.Is(err, drain.ErrCut) {
				t.Errorf("Shutdown() error = %v, want ErrCut", err)
			}
			if wantCut == 0 && err != nil {
				t.Errorf("Shutdown() error = %v, want nil: idle connections are not cut work", err)
			}
			if err := <-s.done; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve() = %v, want http.ErrServerClosed", err)
			}
			// The server closed every connection: each client reads EOF
			// (or a reset, for the one whose answers it never read).
			for i, c := range conns {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
					t.Errorf("connection %d after the drain: %v, want it closed by the server", i, err)
					break
				}
				c.Close()
			}
			waitUntil(t, 5*time.Second, "no connection tracked", func() bool { return s.d.Connections() == 0 })
			waitUntil(t, 5*time.Second, fmt.Sprintf("open descriptors back to %d", before), func() bool {
				return openFDs(t) <= before
			})
		})
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// waitUntil polls cond every 10ms until it holds, or fails the test after
// timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v still waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
