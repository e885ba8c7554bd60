package drain_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/internal/peerread"
)

// generation is one server of a pair standing for two generations of a
// service: its answers say which one it is.
type generation struct {
	d    *drain.Drainer
	srv  *http.Server
	addr string
	done chan error

	release     chan struct{} // closing it answers every /slow request
	releaseOnce sync.Once
}

// releaseSlow answers the /slow requests that wait and those to come.
func (g *generation) releaseSlow() { g.releaseOnce.Do(func() { close(g.release) }) }

func startGeneration(t *testing.T, name string, ln net.Listener) *generation {
	t.Helper()
	g := &generation{d: drain.New(drain.Options{}), done: make(chan error, 1), release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name+"\n") })
	// /slow waits until the test releases it: a request stays under way
	// however long the test takes to set up the rest.
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-g.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, name+" slow\n")
	})
	// As webapp's: HTTP/1.1 and h2c, whose preface check reads a new
	// connection in two steps.
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	g.srv = &http.Server{Handler: mux, Protocols: &protos}
	if ln != nil {
		g.addr = ln.Addr().String()
		go func() { g.done <- g.d.Serve(g.srv, ln) }()
	} else {
		// A generation that only adopts: Serve must know the server.
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { g.done <- g.d.Serve(g.srv, pl) }()
	}
	t.Cleanup(func() { g.releaseSlow(); g.srv.Close() })
	return g
}

// dupMove is a hand-over within this process: it takes a descriptor of
// its own of the connection, as SCM_RIGHTS gives another process one,
// and has the next generation adopt it.
func dupMove(t *testing.T, next *generation) func(net.Conn) error {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(c net.Conn) error {
		mu.Lock()
		if seen[c.RemoteAddr().String()] {
			t.Errorf("connection from %v handed over twice", c.RemoteAddr())
		}
		seen[c.RemoteAddr().String()] = true
		mu.Unlock()
		f, err := c.(interface{ File() (*os.File, error) }).File()
		if err != nil {
			return err
		}
		defer f.Close()
		nc, err := net.FileConn(f)
		if err != nil {
			return err
		}
		return next.d.Adopt(next.srv, nc)
	}
}

// TestHandOverKeepsConnections: kept-alive connections, idle or with a
// request under way when the hand-over is armed, go on with the same TCP
// connection to the next generation: the client sees no
// "Connection: close", no new connection, and the next answers come from
// the next generation. A connection holding part of a pipelined request
// in the old generation's buffer stays until that request is answered
// there, and loses nothing.
func TestHandOverKeepsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	old := startGeneration(t, "old", ln)
	next := startGeneration(t, "next", nil)

	const idle = 200
	var clients []*client
	for range idle {
		c := dial(t, old.addr)
		if _, body, err := c.get("/"); err != nil || body != "old\n" {
			t.Fatalf("first answer: %q, %v", body, err)
		}
		clients = append(clients, c)
	}
	// One with a request under way, one with a pipelined request cut in
	// two: its first half is in the old generation's buffer when the
	// first request's answer is done.
	busy := dial(t, old.addr)
	if err := busy.send("/slow"); err != nil {
		t.Fatal(err)
	}
	piped := dial(t, old.addr)
	if _, err := io.WriteString(piped.c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET / HT"); err != nil {
		t.Fatal(err)
	}
	// One that has sent nothing yet.
	fresh := dial(t, old.addr)
	// One whose request line has been read, its header not yet sent.
	split := dial(t, old.addr)
	if _, err := io.WriteString(split.c, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := peerread.Wait(split.c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, old.d, 4)
	ports := map[*client]string{}
	for _, c := range append(clients, busy, piped, split, fresh) {
		ports[c] = c.c.LocalAddr().String()
		// A request lost in the hand-over is an error, not a hang.
		c.c.SetDeadline(time.Now().Add(15 * time.Second))
	}

	old.d.HandOver(dupMove(t, next))
	type result struct {
		rep drain.Report
		err error
	}
	drained := make(chan result, 1)
	go func() {
		rep, err := shutdown(t, old.d, 10*time.Second)
		drained <- result{rep, err}
	}()
	// The two requests under way end once the hand-over is armed and the
	// drain has begun.
	<-old.d.Begun()
	old.releaseSlow()
	resp, body, err := busy.read()
	if err != nil || body != "old slow\n" || resp.Close {
		t.Errorf("request under way at the hand-over: %q (close %v), %v; want the old generation's answer without Connection: close", body, resp != nil && resp.Close, err)
	}
	resp, body, err = piped.read()
	if err != nil || body != "old slow\n" || resp.Close {
		t.Errorf("pipelined first request: %q, %v; want the old generation's answer without Connection: close", body, err)
	}
	// The rest of the second request: the old generation read its first
	// half, so it must answer it itself; the connection goes after that.
	if _, err := io.WriteString(piped.c, "TP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, body, err := piped.read(); err != nil || body != "old\n" || resp.Close {
		t.Errorf("pipelined second request, half read by the old generation: %q, %v; want the old generation's answer without Connection: close", body, err)
	}
	if _, err := io.WriteString(split.c, "Host: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, body, err := split.read(); err != nil || body != "old\n" || resp.Close {
		t.Errorf("request whose first line the old generation read: %q, %v; want the old generation's answer without Connection: close", body, err)
	}
	r := <-drained
	if r.err != nil {
		t.Fatalf("Shutdown of the old generation: %v", r.err)
	}
	if got := old.d.Moved(); got != idle+4 {
		t.Errorf("Moved() = %d, want %d (the idle connections, the busy one, the pipelined one, the split one and the fresh one)", got, idle+4)
	}
	t.Logf("old generation drained in %v, %d connections handed over", r.rep.Duration.Round(time.Millisecond), old.d.Moved())

	answers := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range append(clients, busy, piped, split, fresh) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := c.get("/")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				answers["failed"]++
				if answers["failed"] == 1 {
					t.Logf("first failure after the hand-over: %v", err)
				}
			case resp.Close:
				answers["closed"]++
			default:
				answers[strings.TrimSpace(body)]++
			}
			if c.c.LocalAddr().String() != ports[c] {
				answers["new connection"]++
			}
		}()
	}
	wg.Wait()
	if answers["next"] != idle+4 || len(answers) != 1 {
		t.Errorf("answers after the hand-over: %v, want %d from the next generation on the same connections", answers, idle+4)
	}
	if got := next.d.Connections(); got != idle+4 {
		t.Errorf("the next generation serves %d connections, want %d", got, idle+4)
	}
}

// TestHandOverFailureDrainsAsBefore: when the hand-over fails, the
// connections stay and drain as without it: answers carry
// "Connection: close" and nothing is lost.
func TestHandOverFailureDrainsAsBefore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	old := startGeneration(t, "old", ln)
	var clients []*client
	for range 20 {
		c := dial(t, old.addr)
		if _, _, err := c.get("/"); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	old.d.HandOver(func(net.Conn) error { return fmt.Errorf("the next generation went away") })
	done := make(chan error, 1)
	go func() {
		_, err := shutdown(t, old.d, 10*time.Second)
		done <- err
	}()
	for old.d.Connections() > 0 && !old.d.Draining() {
		time.Sleep(time.Millisecond)
	}
	// Within the idle grace a request on each is still answered, with
	// Connection: close.
	for i, c := range clients {
		resp, body, err := c.get("/")
		if err != nil || body != "old\n" || !resp.Close {
			t.Errorf("client %d after a failed hand-over: %q, %v; want the old generation's answer with Connection: close", i, body, err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if old.d.Moved() != 0 {
		t.Errorf("Moved() = %d after a failed hand-over, want 0", old.d.Moved())
	}
}

// TestAdaptiveGrace: at the drain of a stop, a kept-alive connection
// whose client sends a request every 600 ms (longer than the 200 ms idle
// grace) is not closed under it: it is kept until its client's next
// request, which is answered with Connection: close. A connection that
// only ever sent one request is closed once the idle grace is over.
func TestAdaptiveGrace(t *testing.T) {
	const grace = 200 * time.Millisecond
	const every = 600 * time.Millisecond
	s := serve(t, drain.Options{IdleGrace: grace})
	regular := dial(t, s.addr)
	for range 3 {
		if _, _, err := regular.get("/"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(every)
	}
	if _, _, err := regular.get("/"); err != nil {
		t.Fatal(err)
	}
	once := dial(t, s.addr)
	if _, _, err := once.get("/"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := shutdown(t, s.d, 10*time.Second)
		done <- err
	}()
	// The regular client goes on at its pace.
	time.Sleep(every)
	resp, body, err := regular.get("/")
	if err != nil || !resp.Close {
		t.Errorf("regular client's request %v into the drain: %q, %v; want an answer with Connection: close (the grace adapts to its pace)", time.Since(start).Round(time.Millisecond), body, err)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	// The one-request client's connection was closed as idle.
	once.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := once.c.Read(make([]byte, 1)); err == nil {
		t.Errorf("the one-request connection read %d bytes after the drain, want it closed", n)
	}
}

// TestHandOverChain: a generation that is itself draining when its
// predecessor's connections arrive (a reload that came while the
// previous one was still handing over) passes each on to the next one
// at once: the clients keep their TCP connections, and their next
// answers come from the third generation. The contrast is the same
// generation draining without a hand-over armed: it closes what it is
// given, and says so.
func TestHandOverChain(t *testing.T) {
	for _, armed := range []bool{true, false} {
		t.Run(fmt.Sprintf("armed=%v", armed), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			a := startGeneration(t, "a", ln)
			b := startGeneration(t, "b", nil)
			c := startGeneration(t, "c", nil)
			const n = 100
			var clients []*client
			ports := map[*client]string{}
			for range n {
				cl := dial(t, a.addr)
				if _, body, err := cl.get("/"); err != nil || body != "a\n" {
					t.Fatalf("first answer: %q, %v", body, err)
				}
				cl.c.SetDeadline(time.Now().Add(15 * time.Second))
				ports[cl] = cl.c.LocalAddr().String()
				clients = append(clients, cl)
			}
			// b's own drain begins before a's connections come.
			if armed {
				b.d.HandOver(dupMove(t, c))
			}
			b.d.StopAccepting()
			var refused sync.Map
			a.d.HandOver(func(conn net.Conn) error {
				err := dupMove(t, b)(conn)
				if err != nil {
					refused.Store(conn.RemoteAddr().String(), err)
				}
				return err
			})
			if _, err := shutdown(t, a.d, 10*time.Second); err != nil {
				t.Fatalf("Shutdown of the first generation: %v", err)
			}
			if !armed {
				var errs []error
				refused.Range(func(_, v any) bool { errs = append(errs, v.(error)); return true })
				// The first refusal disarms a's hand-over; moves already
				// under way beside it are refused too.
				all := len(errs) > 0
				for _, err := range errs {
					all = all && errors.Is(err, http.ErrServerClosed)
				}
				if !all || a.d.Moved() != 0 {
					t.Errorf("a draining generation without a hand-over: Adopt refused %v, %d moved; want http.ErrServerClosed and none moved (the contrast)", errs, a.d.Moved())
				}
				return
			}
			if a.d.Moved() != n || b.d.Moved() != n {
				t.Errorf("moved: first generation %d, second %d; want %d each", a.d.Moved(), b.d.Moved(), n)
			}
			answers := map[string]int{}
			for _, cl := range clients {
				resp, body, err := cl.get("/")
				switch {
				case err != nil:
					answers["failed"]++
				case resp.Close:
					answers["closed"]++
				case cl.c.LocalAddr().String() != ports[cl]:
					answers["new connection"]++
				default:
					answers[strings.TrimSpace(body)]++
				}
			}
			if answers["c"] != n || len(answers) != 1 {
				t.Errorf("answers after two hand-overs: %v, want %d from the third generation on the same connections", answers, n)
			}
		})
	}
}
