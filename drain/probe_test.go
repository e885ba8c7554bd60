package drain_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
)

// pipeListener accepts the server ends of net.Pipe connections, as a
// health probe's in-memory listener does.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// dial sends a request through the listener and returns the client end.
func (l *pipeListener) dial(t *testing.T, path string) net.Conn {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close() })
	select {
	case l.conns <- server:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not accept the pipe within 10 s")
	}
	go fmt.Fprintf(client, "GET %s HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n", path)
	return client
}

// TestServeProbeNotCounted: a request that arrives through ServeProbe's
// listener is served by the same server and handler as a client's, but
// its connection is not one of the service's: while it is under way,
// Connections and InFlight count the client's connection alone, and a
// drain neither waits for it nor cuts it. The contrast is the same
// request through Serve, which counts it.
func TestServeProbeNotCounted(t *testing.T) {
	for _, probe := range []bool{true, false} {
		t.Run(fmt.Sprintf("probe=%v", probe), func(t *testing.T) {
			d := drain.New(drain.Options{IdleGrace: -1})
			entered := make(chan string, 4)
			release := map[string]chan struct{}{"probe": make(chan struct{}), "x": make(chan struct{})}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- r.Host
				<-release[r.Host]
				w.Write([]byte("ok\n"))
			})}
			t.Cleanup(func() { srv.Close() })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go d.Serve(srv, ln)
			pl := newPipeListener()
			serveErr := make(chan error, 1)
			if probe {
				go func() { serveErr <- d.ServeProbe(srv, pl) }()
			} else {
				go func() { serveErr <- d.Serve(srv, pl) }()
			}
			pc := pl.dial(t, "/healthz")
			if h := <-entered; h != "probe" {
				t.Fatalf("the handler saw host %q first, want the probe's", h)
			}
			c := dial(t, ln.Addr().String())
			c.send("/")
			if h := <-entered; h != "x" {
				t.Fatalf("the handler saw host %q, want the client's", h)
			}
			want := 1
			if !probe {
				want = 2
			}
			if n, f := d.Connections(), d.InFlight(); n != want || f != want {
				t.Errorf("with a client's request and a probe's under way: Connections() = %d, InFlight() = %d, want %d", n, f, want)
			}
			// The client's request ends; the probe's stays in the handler.
			// A drain waits for what it counts only.
			done := make(chan struct{})
			go func() {
				defer close(done)
				if _, body, err := c.read(); err != nil || body != "ok\n" {
					t.Errorf("the client's answer: %q, %v", body, err)
				}
			}()
			close(release["x"])
			<-done
			rep, err := shutdown(t, d, 500*time.Millisecond)
			if probe && (err != nil || rep.Cut != 0) {
				t.Errorf("Shutdown() with a probe's request under way = %+v, %v; want it not waited for and nothing cut", rep, err)
			}
			if !probe && (!errors.Is(err, drain.ErrCut) || rep.Cut != 1) {
				t.Errorf("Shutdown() with the same request through Serve = %+v, %v; want it waited for and cut (the contrast)", rep, err)
			}
			if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve of the pipe listener after Shutdown: %v, want http.ErrServerClosed", err)
			}
			close(release["probe"])
			if probe {
				// The probe ends its own request, answered by the same handler.
				resp, err := http.ReadResponse(bufio.NewReader(pc), nil)
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("the probe's answer after the drain: %v, %v", resp, err)
				}
			}
		})
	}
}
