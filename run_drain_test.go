package baton_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/systemd/notifytest"
)

// hijacker serves /hold/N: it hijacks the connection, says "hello", and,
// when the drain begins (baton.Draining of the request), waits N ms, says
// "bye" and closes. N < 0 ignores the drain: the connection stays open
// until the client closes it or the deadline cuts it.
func hijacker(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/hold/"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello\n")
	brw.Flush()
	draining := baton.Draining(r.Context())
	if ms < 0 {
		draining = nil
	}
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(gone) }()
	select {
	case <-draining:
		time.Sleep(time.Duration(ms) * time.Millisecond)
		io.WriteString(c, "bye\n")
	case <-gone:
	}
}

// holder is a client of /hold/N or of the stream socket.
type holder struct {
	c    net.Conn
	br   *bufio.Reader
	said chan string // what came after hello, at EOF
}

func hold(t *testing.T, sock baton.Socket, path string) *holder {
	t.Helper()
	network := sock.Network
	if network == "" {
		network = "tcp"
	}
	c, err := net.Dial(network, sock.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if path != "" {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	}
	h := &holder{c: c, br: bufio.NewReader(c), said: make(chan string, 1)}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		line, err := h.br.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v before hello", path, err)
		}
		if line == "hello\n" {
			break
		}
	}
	go func() {
		b, _ := io.ReadAll(h.br)
		h.said <- string(b)
	}()
	return h
}

// TestRunDrainingSignal: HTTP handlers (a hijacked connection) and Stream
// handlers learn from baton.Draining that the drain began, say goodbye
// and close; a hijacked connection whose handler ignores it is cut at the
// deadline and counted. STATUS= counts the long-lived connections. The
// sockets are unix sockets in the test's own directory, so that the
// counts are of this test's connections alone: a loopback port chosen
// here could be dialled by another process on the machine that held the
// same port number a moment earlier.
func TestRunDrainingSignal(t *testing.T) {
	notify := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", notify.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	dir := t.TempDir()
	httpSock := baton.Socket{Name: "http", Network: "unix", Address: filepath.Join(dir, "http")}
	streamSock := baton.Socket{Name: "raw", Network: "unix", Address: filepath.Join(dir, "raw")}
	mux := http.NewServeMux()
	mux.HandleFunc("/hold/", hijacker)
	mux.HandleFunc("/{$}", hello)
	stream := func(ctx context.Context, c net.Conn) {
		io.WriteString(c, "hello\n")
		<-baton.Draining(ctx)
		if ctx.Err() == nil {
			t.Errorf("a Stream handler's ctx has not ended when Draining is closed")
		}
		io.WriteString(c, "bye\n")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{DrainTimeout: 2 * time.Second, IdleGrace: -1},
			baton.HTTP(httpSock, &http.Server{Handler: mux}),
			baton.Stream(streamSock, stream))
	}()
	notify.WaitFor(t, 0, "READY=1", 20*time.Second)
	polite := []*holder{hold(t, httpSock, "/hold/0"), hold(t, httpSock, "/hold/50"), hold(t, streamSock, "")}
	stubborn := hold(t, httpSock, "/hold/-1")
	from := len(notify.Messages())
	start := time.Now()
	cancel()
	for i, h := range polite {
		if got := <-h.said; got != "bye\n" {
			t.Errorf("polite client %d heard %q after hello, want \"bye\\n\"", i, got)
		}
	}
	if got := <-stubborn.said; got != "" {
		t.Errorf("stubborn client heard %q, want nothing (cut)", got)
	}
	err := <-done
	took := time.Since(start)
	if !errors.Is(err, drain.ErrCut) || !strings.Contains(err.Error(), "1 connections cut") {
		t.Errorf("Run() = %v, want 1 connection cut (ErrCut)", err)
	}
	if took < 2*time.Second {
		t.Errorf("the stop took %v, want the 2s deadline for the stubborn connection", took)
	}
	m, _ := notify.WaitFor(t, from, "STOPPING=1", 5*time.Second)
	if st, _ := m.Get("STATUS"); st != "draining: 4 connections remain, 4 long-lived (WebSocket, stream, gRPC)" {
		t.Errorf("STATUS= at the stop = %q, want 4 connections, 4 long-lived", st)
	}
	var later []string
	for _, m := range notify.Messages()[from:] {
		if st, ok := m.Get("STATUS"); ok {
			later = append(later, st)
		}
	}
	if !contains(later, "draining: 1 connections remain, 1 long-lived (WebSocket, stream, gRPC)") {
		t.Errorf("STATUS= lines during the stop: %q, want one with the stubborn connection alone", later)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestRunStopExtendsWhileLeaving: with StopTimeout 5s the stop's drain
// would end at 4 s, but its connections are still leaving then (one
// every second, the last at 5 s): it moves its deadline on and tells
// systemd each time
// (EXTEND_TIMEOUT_USEC=), every leaving connection says goodbye, and once
// none leaves any more the one left is cut. At no point would systemd's
// timer (TimeoutStopSec= from the start, or the latest extension from
// its arrival) have fired before Run returned.
func TestRunStopExtendsWhileLeaving(t *testing.T) {
	notify := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", notify.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	sock := baton.Socket{Name: "http", Network: "unix", Address: filepath.Join(t.TempDir(), "http")}
	mux := http.NewServeMux()
	mux.HandleFunc("/hold/", hijacker)
	mux.HandleFunc("/{$}", hello)
	const stopTimeout = 5 * time.Second
	const every = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{StopTimeout: stopTimeout, IdleGrace: -1},
			baton.HTTP(sock, &http.Server{Handler: mux}))
	}()
	notify.WaitFor(t, 0, "READY=1", 20*time.Second)
	var leavers []*holder
	const n = 5
	for i := range n {
		leavers = append(leavers, hold(t, sock, fmt.Sprintf("/hold/%d", every.Milliseconds()*int64(i+1))))
	}
	stubborn := hold(t, sock, "/hold/-1")
	from := len(notify.Messages())
	start := time.Now()
	cancel()
	for i, h := range leavers {
		if got := <-h.said; got != "bye\n" {
			t.Errorf("client leaving after %v heard %q, want \"bye\\n\" (not cut)", every*time.Duration(i+1), got)
		}
	}
	<-stubborn.said
	err := <-done
	end := time.Now()
	if !errors.Is(err, drain.ErrCut) || !strings.Contains(err.Error(), "1 connections cut") {
		t.Errorf("Run() = %v, want the stubborn connection cut (ErrCut)", err)
	}
	killAt := start.Add(stopTimeout)
	extends := 0
	for _, m := range notify.Messages()[from:] {
		v, ok := m.Get("EXTEND_TIMEOUT_USEC")
		if !ok {
			continue
		}
		extends++
		us, err := strconv.ParseInt(v, 10, 64)
		if err != nil || us <= 0 {
			t.Errorf("EXTEND_TIMEOUT_USEC=%q, want a positive number", v)
			continue
		}
		if at := m.Time.Add(time.Duration(us) * time.Microsecond); at.After(killAt) {
			killAt = at
		}
	}
	t.Logf("stop took %v; %d extensions; systemd's timer would fire at %v", end.Sub(start).Round(time.Millisecond), extends, killAt.Sub(start).Round(time.Millisecond))
	if extends == 0 {
		t.Errorf("no EXTEND_TIMEOUT_USEC= during a drain whose connections were leaving")
	}
	if end.Sub(start) < n*every {
		t.Errorf("the stop took %v, want it to wait for the last leaver at %v", end.Sub(start), n*every)
	}
	if end.After(killAt) {
		t.Errorf("Run returned %v after the start, after systemd's timer (%v): it would have been killed", end.Sub(start), killAt.Sub(start))
	}
}
