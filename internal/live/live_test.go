package live_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/internal/live"
	"github.com/coder/websocket"
)

// serve serves the two endpoints through a real Drainer on a loopback
// port, with the signal given (drain.Begun, or one that never fires).
func serve(t *testing.T, signal live.Signal) (*drain.Drainer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", live.WebSocket(signal))
	mux.Handle("GET /events", live.Events(signal, 20*time.Millisecond))
	d := drain.New(drain.Options{IdleGrace: -1})
	srv := &http.Server{Handler: mux}
	go d.Serve(srv, ln)
	t.Cleanup(func() {
		if !d.Draining() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			d.Shutdown(ctx)
		}
	})
	return d, ln.Addr().String()
}

// TestWebSocketEchoesThenGoesAway: every message is echoed; when the
// drain begins the server closes with 1001 and the close handshake, the
// drain then ends with nothing cut, and the client has every echo of
// what it sent before.
func TestWebSocketEchoesThenGoesAway(t *testing.T) {
	d, addr := serve(t, drain.Begun)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if resp.Header.Get("X-Webapp-Pid") == "" {
		t.Errorf("101 response has no X-Webapp-Pid")
	}
	for i := range 5 {
		msg := "m " + strconv.Itoa(i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := c.Read(ctx)
		if err != nil || string(b) != msg {
			t.Fatalf("Read() = %q, %v; want %q", b, err, msg)
		}
	}
	if d.Raw() != 1 {
		t.Errorf("Drainer.Raw() = %d with one WebSocket open, want 1", d.Raw())
	}
	shut := make(chan drain.Report, 1)
	go func() {
		rep, err := d.Shutdown(ctx)
		if err != nil {
			t.Errorf("Shutdown() = %v, want nil", err)
		}
		shut <- rep
	}()
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Fatalf("Read() after the drain began = %v, want close status 1001", err)
	}
	// The library answers the close frame inside Read: the server's
	// handshake completes and its side of the connection closes.
	rep := <-shut
	if rep.Cut != 0 {
		t.Errorf("Shutdown() cut %d, want 0", rep.Cut)
	}
}

// TestWebSocketWithoutSignalIsCut: the contrast. A handler that does not
// watch the drain keeps its connection to the deadline, where it is cut
// and counted, and the client sees no close frame (1006).
func TestWebSocketWithoutSignalIsCut(t *testing.T) {
	d, addr := serve(t, func(context.Context) <-chan struct{} { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer dcancel()
	rep, err := d.Shutdown(dctx)
	if !errors.Is(err, drain.ErrCut) || rep.Cut != 1 {
		t.Errorf("Shutdown() = %+v, %v; want 1 cut, ErrCut", rep, err)
	}
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != -1 {
		t.Errorf("Read() after the cut = %v (status %d), want no close frame", err, got)
	}
}

// sseEvent is one event read from a stream.
type sseEvent struct{ id, data string }

// readEvents reads events until the stream ends.
func readEvents(t *testing.T, c *http.Client, url, lastID string, each func(sseEvent)) (*http.Response, []sseEvent) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var evs []sseEvent
	var ev sseEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		case line == "" && ev.id != "":
			evs = append(evs, ev)
			if each != nil {
				each(ev)
			}
			ev = sseEvent{}
		}
	}
	if ev.id != "" {
		t.Errorf("the stream ended inside event %+v", ev)
	}
	return resp, evs
}

// TestEventsResumeAndEndAtDrain: ids count up from Last-Event-ID; at the
// drain the stream ends after a whole event, and a request made while
// draining gets an empty stream (200, Connection: close) so that the
// client reconnects elsewhere.
func TestEventsResumeAndEndAtDrain(t *testing.T) {
	d, addr := serve(t, drain.Begun)
	url := "http://" + addr + "/events"
	resp, evs := readEvents(t, http.DefaultClient, url, "41", func(ev sseEvent) {
		if ev.id == "45" && !d.Draining() {
			go d.StopAccepting()
		}
	})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("GET /events = %d %q, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if len(evs) < 4 {
		t.Fatalf("%d events, want at least 4 (42 to 45)", len(evs))
	}
	for i, ev := range evs {
		want := strconv.Itoa(42 + i)
		if ev.id != want || !strings.HasPrefix(ev.data, want+" ") {
			t.Errorf("event %d = %+v, want id %s", i, ev, want)
		}
	}
	// The drain began as event 45 was read: the one being written then
	// (46) may still come, no more.
	if last := evs[len(evs)-1].id; last != "45" && last != "46" {
		t.Errorf("last event %s, want 45 or 46: the stream went on after the drain began", last)
	}
}

// TestEventsBadLastEventID: a Last-Event-ID that is not a number is a 400
// that says why.
func TestEventsBadLastEventID(t *testing.T) {
	_, addr := serve(t, drain.Begun)
	req, _ := http.NewRequest("GET", "http://"+addr+"/events", nil)
	req.Header.Set("Last-Event-ID", "x1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 200)
	n, _ := resp.Body.Read(b)
	if resp.StatusCode != 400 || !strings.Contains(string(b[:n]), `Last-Event-ID "x1"`) {
		t.Errorf("GET /events with Last-Event-ID x1 = %d %q, want 400 naming it", resp.StatusCode, b[:n])
	}
}

// TestEventsWhileDraining: a stream asked for once the drain has begun
// is empty and its connection closes.
func TestEventsWhileDraining(t *testing.T) {
	d, addr := serve(t, drain.Begun)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A kept-alive connection from before the drain.
	fmt.Fprintf(c, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	d.StopAccepting()
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "id:") {
			t.Errorf("event %q sent while draining", sc.Text())
		}
	}
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("GET /events while draining = %d, close %v; want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
}

// TestEventsWhileDrainingHTTP2: over h2c, a stream asked for once the
// drain has begun is empty and the connection gets GOAWAY, so that the
// client's next request does not go to this generation again.
func TestEventsWhileDrainingHTTP2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var h2c http.Protocols
	h2c.SetHTTP1(true)
	h2c.SetUnencryptedHTTP2(true)
	mux := http.NewServeMux()
	mux.Handle("GET /events", live.Events(drain.Begun, 20*time.Millisecond))
	d := drain.New(drain.Options{IdleGrace: 5 * time.Second})
	go d.Serve(&http.Server{Handler: mux, Protocols: &h2c}, ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Shutdown(ctx)
	}()
	var client http.Protocols
	client.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &client}, Timeout: 10 * time.Second}
	url := "http://" + ln.Addr().String() + "/events"
	_, evs := readEvents(t, c, url, "", func(ev sseEvent) {
		if ev.id == "2" && !d.Draining() {
			go d.StopAccepting()
		}
	})
	if len(evs) < 2 {
		t.Fatalf("%d events before the drain, want 2 or 3", len(evs))
	}
	// The same connection, while draining: an empty stream and GOAWAY.
	resp, evs := readEvents(t, c, url, "2", nil)
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || len(evs) != 0 {
		t.Errorf("GET /events while draining = %s %d with %d events, want HTTP/2 200 and none", resp.Proto, resp.StatusCode, len(evs))
	}
	// After the GOAWAY the client cannot open a stream on that
	// connection, and the listener is closed: the next request fails to
	// connect rather than reaching this generation.
	req, _ := http.NewRequest("GET", url, nil)
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("GET /events after the GOAWAY reached the draining server (%s %d), want no connection to it", resp.Proto, resp.StatusCode)
	}
}
