package drain_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
)

// h2cServe serves slowMux over HTTP/1.1 and h2c with a Drainer.
func h2cServe(t *testing.T, opts drain.Options) (*drain.Drainer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := drain.New(opts)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: slowMux(), Protocols: &p}
	go d.Serve(srv, ln)
	t.Cleanup(func() { srv.Close() })
	return d, ln.Addr().String()
}

// h2cClient speaks HTTP/2 with prior knowledge and never opens a second
// connection without being told to.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 20 * time.Second}
}

// TestHTTP2BusyThroughDrain keeps one HTTP/2 connection busy through a
// drain, as a benchmark client (h2load) does: every request it sends is
// answered on that connection. A GOAWAY before it is done would make the
// client dial again, and the closed listener would refuse it.
func TestHTTP2BusyThroughDrain(t *testing.T) {
	d, addr := h2cServe(t, drain.Options{IdleGrace: 200 * time.Millisecond})
	c := h2cClient()
	get := func() error {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
		}
		if resp.Header.Get("Connection") != "" {
			t.Errorf("HTTP/2 answer with Connection: %q", resp.Header.Get("Connection"))
		}
		_, err = io.ReadAll(resp.Body)
		return err
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	if n := d.HTTP2(); n != 1 {
		t.Fatalf("HTTP2() = %d after one request, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan drain.Report, 1)
	go func() {
		rep, err := d.Shutdown(ctx)
		if err != nil {
			t.Errorf("Shutdown() = %v", err)
		}
		done <- rep
	}()
	// Well past the idle grace: the connection stays ours while busy.
	failed := 0
	for i := 0; i < 300; i++ {
		if err := get(); err != nil {
			failed++
			t.Logf("request %d during the drain: %v", i, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if failed > 0 {
		t.Errorf("%d of 300 requests on a busy HTTP/2 connection failed during the drain, want 0", failed)
	}
	select {
	case <-done:
		t.Error("Shutdown returned while the HTTP/2 connection was still busy")
	default:
	}
	// Idle now: after the grace it gets GOAWAY and the drain ends.
	select {
	case rep := <-done:
		if rep.Cut != 0 {
			t.Errorf("Report.Cut = %d, want 0", rep.Cut)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return after the HTTP/2 connection went idle")
	}
}

// TestHTTP2StreamFinishes: a long HTTP/2 request under way when the drain
// begins is answered in full, and the drain then ends without a cut.
func TestHTTP2StreamFinishes(t *testing.T) {
	d, addr := h2cServe(t, drain.Options{IdleGrace: 100 * time.Millisecond})
	c := h2cClient()
	body := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://" + addr + "/slow?d=1500ms&after=drain")
		if err != nil {
			body <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body <- string(b)
	}()
	waitInFlight(t, d, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := d.Shutdown(ctx)
	if err != nil || rep.Cut != 0 {
		t.Errorf("Shutdown() = %+v, %v, want no cut", rep, err)
	}
	if b := <-body; b != "slow done\n" {
		t.Errorf("the stream under way got %q, want its whole answer", b)
	}
}
