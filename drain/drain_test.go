package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
)

// slowMux answers /slow after ?d= (a duration) and / at once. With
// ?after=drain the wait begins only when the drain has: the request is
// under way when it does however slowly the test gets there.
func slowMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello world\n")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		if r.URL.Query().Get("after") == "drain" {
			select {
			case <-drain.Begun(r.Context()):
			case <-r.Context().Done():
				return
			}
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "slow done\n")
	})
	return mux
}

type served struct {
	d        *drain.Drainer
	srv      *http.Server
	addr     string
	done     chan error
	requests atomic.Int64 // handled so far
}

func serve(t *testing.T, opts drain.Options) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &served{d: drain.New(opts), addr: ln.Addr().String(), done: make(chan error, 1)}
	mux := slowMux()
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		mux.ServeHTTP(w, r)
	})}
	go func() { s.done <- s.d.Serve(s.srv, ln) }()
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// client is a kept-alive HTTP/1.1 connection without retries.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, br: bufio.NewReader(c)}
}

func (c *client) send(path string) error {
	_, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	return err
}

func (c *client) read() (*http.Response, string, error) {
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func (c *client) get(path string) (*http.Response, string, error) {
	if err := c.send(path); err != nil {
		return nil, "", err
	}
	return c.read()
}

// waitInFlight waits until d has n requests in flight, failing the test
// after 10 s.
func waitInFlight(t *testing.T, d *drain.Drainer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d.InFlight() != n {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight() = %d after 10 s, want %d", d.InFlight(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func shutdown(t *testing.T, d *drain.Drainer, timeout time.Duration) (drain.Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.Shutdown(ctx)
}

func TestInFlightRequestCompletes(t *testing.T) {
	s := serve(t, drain.Options{IdleGrace: 100 * time.Millisecond})
	c := dial(t, s.addr)
	if err := c.send("/slow?d=700ms&after=drain"); err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, s.d, 1)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, body, err := c.read()
		got <- result{resp, body, err}
	}()
	start := time.Now()
	rep, err := shutdown(t, s.d, 15*time.Second)
	if err != nil || rep.Cut != 0 {
		t.Fatalf("Shutdown() = %+v, %v; want no cut, nil", rep, err)
	}
	// It waited for the request, and returned when it ended, not at the
	// context's deadline.
	if n := s.d.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d when Shutdown returned, want 0", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v, want about the 700ms of the request", d)
	}
	r := <-got
	if r.err != nil || r.body != "slow done\n" {
		t.Fatalf("in-flight request: body %q, err %v; want the full answer", r.body, r.err)
	}
	if !r.resp.Close {
		t.Errorf("in-flight response without Connection: close")
	}
	if err := <-s.done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve() = %v, want http.ErrServerClosed", err)
	}
}

// A client that sends its next request on a kept-alive connection just as
// the drain begins is still answered.
func TestRequestRacingDrainIsAnswered(t *testing.T) {
	s := serve(t, drain.Options{IdleGrace: 500 * time.Millisecond})
	c := dial(t, s.addr)
	if resp, _, err := c.get("/"); err != nil || resp.Close {
		t.Fatalf("first request: %v, %v; want a kept-alive answer", resp, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		shutdown(t, s.d, 5*time.Second)
	}()
	for !s.d.Draining() {
		time.Sleep(time.Millisecond)
	}
	resp, body, err := c.get("/")
	if err != nil {
		t.Fatalf("request on the kept-alive connection during the drain: %v, want an answer", err)
	}
	if body != "hello world\n" || !resp.Close {
		t.Errorf("answer during drain: %q, close %v; want hello world with Connection: close", body, resp.Close)
	}
	<-done
}

func TestIdleConnectionsDoNotDelayPastGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	s := serve(t, drain.Options{IdleGrace: grace})
	var clients []*client
	for range 50 {
		c := dial(t, s.addr)
		if _, _, err := c.get("/"); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if n := s.d.Connections(); n != 50 {
		t.Fatalf("Connections() = %d, want 50", n)
	}
	rep, err := shutdown(t, s.d, 20*time.Second)
	if err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	// At least the grace; far from the context's deadline even on a
	// loaded machine.
	if rep.Duration < grace || rep.Duration > grace+5*time.Second {
		t.Errorf("Shutdown with 50 idle connections took %v, want about the grace %v", rep.Duration, grace)
	}
	for i, c := range clients {
		c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.br.ReadByte(); err != io.EOF {
			t.Errorf("idle connection %d: read = %v, want EOF (closed by the server)", i, err)
			break
		}
	}
}

func TestNoConnectionsNoGrace(t *testing.T) {
	s := serve(t, drain.Options{IdleGrace: 20 * time.Second})
	rep, err := shutdown(t, s.d, 30*time.Second)
	if err != nil || rep.Duration > 5*time.Second {
		t.Errorf("Shutdown() with no connections = %+v, %v; want an immediate return", rep, err)
	}
}

func TestDeadlineCutsLongRequest(t *testing.T) {
	s := serve(t, drain.Options{IdleGrace: 50 * time.Millisecond})
	c := dial(t, s.addr)
	if err := c.send("/slow?d=10s"); err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, s.d, 1)
	rep, err := shutdown(t, s.d, 400*time.Millisecond)
	if !errors.Is(err, drain.ErrCut) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown() error = %v, want ErrCut and DeadlineExceeded", err)
	}
	if rep.Cut != 1 {
		t.Errorf("Shutdown() cut %d, want 1", rep.Cut)
	}
	if rep.Duration > 5*time.Second {
		t.Errorf("Shutdown() took %v, want about the 400ms deadline", rep.Duration)
	}
	if _, _, err := c.read(); err == nil {
		t.Error("the cut request got an answer, want its connection closed")
	}
}

func TestListenerClosedAtDrain(t *testing.T) {
	s := serve(t, drain.Options{IdleGrace: -1})
	// Serve has taken the listener once it answers (a Shutdown before
	// that would find no listener to close, and Serve would close it
	// only when it starts).
	if _, _, err := dial(t, s.addr).get("/"); err != nil {
		t.Fatal(err)
	}
	if _, err := shutdown(t, s.d, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatal("dial after the drain succeeded, want refused: the listener must be closed")
	}
}

func TestRawConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := drain.New(drain.Options{IdleGrace: -1})
	tl := d.Listen(ln)
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	a, _ := net.Dial("tcp", ln.Addr().String())
	b, _ := net.Dial("tcp", ln.Addr().String())
	defer a.Close()
	defer b.Close()
	ca, cb := <-accepted, <-accepted
	if n := d.Connections(); n != 2 {
		t.Fatalf("Connections() = %d, want 2", n)
	}
	drained := make(chan struct{})
	d.OnDrain(func() {
		ca.Close() // a well-behaved owner finishes when told
		close(drained)
	})
	rep, err := func() (drain.Report, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return d.Shutdown(ctx)
	}()
	<-drained
	if !errors.Is(err, drain.ErrCut) || rep.Cut != 1 {
		t.Fatalf("Shutdown() = %+v, %v; want 1 connection (the one never closed) cut", rep, err)
	}
	b.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := b.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("cut raw connection: read = %v, want EOF", err)
	}
	_ = cb
	if _, ok := <-accepted; ok {
		t.Error("listener still accepting after Shutdown")
	}
}

func TestHijackedConnectionIsTracked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := drain.New(drain.Options{IdleGrace: -1})
	hijacked := make(chan net.Conn, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n\r\n")
		brw.Flush()
		hijacked <- c
	})}
	go d.Serve(srv, ln)
	defer srv.Close()
	c := dial(t, ln.Addr().String())
	c.send("/ws")
	hc := <-hijacked
	if n := d.InFlight(); n != 1 {
		t.Fatalf("InFlight() with a hijacked connection = %d, want 1", n)
	}
	rep, err := shutdown(t, d, 300*time.Millisecond)
	if !errors.Is(err, drain.ErrCut) || rep.Cut != 1 {
		t.Errorf("Shutdown() = %+v, %v; want the hijacked connection cut", rep, err)
	}
	hc.Close()
}

func TestShutdownTwice(t *testing.T) {
	d := drain.New(drain.Options{})
	if _, err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Shutdown(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Shutdown() = %v, want an error", err)
	}
}

// StopAccepting closes the listeners and marks answers with Connection:
// close at once; Shutdown then finishes the drain.
func TestStopAcceptingThenShutdown(t *testing.T) {
	s := serve(t, drain.Options{IdleGrace: 100 * time.Millisecond})
	c := dial(t, s.addr)
	if _, _, err := c.get("/"); err != nil {
		t.Fatal(err)
	}
	s.d.StopAccepting()
	s.d.StopAccepting() // idempotent
	if conn, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		conn.Close()
		t.Error("dial after StopAccepting succeeded, want refused")
	}
	resp, body, err := c.get("/")
	if err != nil || body != "hello world\n" || !resp.Close {
		t.Errorf("request on a kept-alive connection after StopAccepting: %q, %v; want an answer with Connection: close", body, err)
	}
	if _, err := shutdown(t, s.d, 5*time.Second); err != nil {
		t.Errorf("Shutdown() after StopAccepting = %v, want nil", err)
	}
}

// TestBegun: the drain signal is closed when the drain begins, and
// reaches a request's context and a context made by NewContext; other
// contexts have none (nil, never closing).
func TestBegun(t *testing.T) {
	d := drain.New(drain.Options{IdleGrace: -1})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan (<-chan struct{}), 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- drain.Begun(r.Context())
	})}
	go d.Serve(srv, ln)
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fromRequest := <-got
	fromCtx := drain.Begun(d.NewContext(context.Background()))
	if fromRequest == nil || fromRequest != d.Begun() || fromCtx != d.Begun() {
		t.Fatalf("Begun(request) = %v, Begun(NewContext) = %v, want d.Begun() = %v", fromRequest, fromCtx, d.Begun())
	}
	if ch := drain.Begun(context.Background()); ch != nil {
		t.Errorf("Begun(context.Background()) = %v, want nil", ch)
	}
	select {
	case <-d.Begun():
		t.Fatal("Begun() closed before the drain")
	default:
	}
	d.StopAccepting()
	select {
	case <-fromRequest:
	case <-time.After(5 * time.Second):
		t.Fatal("Begun() still open after StopAccepting")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
}
