package upgrade

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeControl serves the control protocol on a real unix socket: pid
// answers with the pids in turn, and reload breaks the connection.
func fakeControl(t *testing.T, pids ...string) (path string, ln net.Listener) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			if line == "pid\n" && len(pids) > 0 {
				c.Write([]byte("ok " + pids[0] + " 0\n"))
				pids = pids[1:]
			}
			c.Close()
		}
	}()
	return path, ln
}

// A reload whose generation goes away before it answers succeeds only if
// another process serves the control socket afterwards.
func TestRequestAfterBrokenAnswer(t *testing.T) {
	t.Run("another process serves", func(t *testing.T) {
		path, _ := fakeControl(t, "100", "200")
		res, err := Request(context.Background(), path)
		if err != nil || res.PID != 200 {
			t.Fatalf("Request() = %+v, %v; want pid 200 (the new generation), nil", res, err)
		}
	})
	t.Run("the same process serves", func(t *testing.T) {
		path, _ := fakeControl(t, "100", "100")
		res, err := Request(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), "pid 100 still serves") {
			t.Fatalf("Request() = %+v, %v; want a failure naming pid 100", res, err)
		}
	})
	t.Run("nobody holds the socket", func(t *testing.T) {
		path, ln := fakeControl(t, "100")
		go func() {
			// Close once the reload request broke.
			for i := 0; i < 100; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			ln.Close()
		}()
		res, err := Request(context.Background(), path)
		// It gives up on the refused connections, not at its time bound.
		if err == nil || !strings.Contains(err.Error(), "no process holds") {
			t.Fatalf("Request() = %+v, %v; want a failure saying no process holds the socket", res, err)
		}
	})
}
