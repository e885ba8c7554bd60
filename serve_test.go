package baton_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/systemd/notifytest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") }

// TestServe runs Serve in this process with a real notify socket: it
// serves, says READY=1 with its status, and drains and returns nil when
// the context ends.
func TestServe(t *testing.T) {
	sock := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- baton.Serve(ctx, &http.Server{Handler: http.HandlerFunc(hello)}, baton.Options{
			Listener:  activation.Spec{Address: addr},
			IdleGrace: 100 * time.Millisecond,
			Version:   "1.2.3",
		})
	}()
	m, _ := sock.WaitFor(t, 0, "READY=1", 10*time.Second)
	if st, _ := m.Get("STATUS"); !strings.Contains(st, "serving http on "+addr+" (bound)") || !strings.Contains(st, "version 1.2.3") {
		t.Errorf("STATUS=%q, want what it serves", st)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello\n" {
		t.Errorf("GET / = %q, want hello", b)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve() = %v after the context ended, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the context ended")
	}
	sock.WaitFor(t, 0, "STOPPING=1", 10*time.Second)
}

// A server that fails its health probe never takes a connection.
func TestServeNotHealthy(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	addr := freeAddr(t)
	err := baton.Serve(context.Background(), &http.Server{Handler: http.NotFoundHandler()}, baton.Options{
		Listener: activation.Spec{Address: addr},
	})
	if err == nil || !strings.Contains(err.Error(), "not ready: health probe: 404") {
		t.Errorf("Serve() with a failing health path = %v, want not ready: ... 404", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener is still open after a failed start")
	}
}

// A drain cut by the deadline is reported as drain.ErrCut.
func TestServeDeadlineCut(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	addr := freeAddr(t)
	started := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			started <- struct{}{}
			<-r.Context().Done()
			return
		}
		hello(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- baton.Serve(ctx, &http.Server{Handler: h}, baton.Options{
			Listener:     activation.Spec{Address: addr},
			DrainTimeout: 300 * time.Millisecond,
			IdleGrace:    50 * time.Millisecond,
		})
	}()
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var c net.Conn
		if c, err = net.Dial("tcp", addr); err == nil {
			defer c.Close()
			io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
			break
		}
		if time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	if err := <-done; !errors.Is(err, drain.ErrCut) || !strings.Contains(err.Error(), "1 connections cut") {
		t.Errorf("Serve() = %v, want drain.ErrCut with 1 connection cut", err)
	}
}
