// Package live is webapp's long-lived endpoints, each of which ends
// cleanly and resumably when its generation begins to drain:
//
//   - GET /ws, a WebSocket that echoes every text message. When the drain
//     begins it echoes what it has already read, then closes with 1001
//     (going away) and waits for the client's close frame. The client
//     reconnects, to the new generation after a reload, and resends what
//     was not echoed.
//   - GET /events, server-sent events: one event a tick, whose id counts
//     up from the client's Last-Event-ID (data: "<id> <pid>"). When the
//     drain begins the stream ends after the event being written; the
//     client reconnects with Last-Event-ID and misses nothing.
//
// The drain signal is a function of the request's context, such as
// drain.Begun (baton.Draining is the same); one that returns nil never
// ends a connection early (webapp's contrast mode for tests).
package live

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// writeTimeout bounds one WebSocket write; coder/websocket closes the
// connection when it passes.
const writeTimeout = 10 * time.Second

// DefaultInterval is the time between two events of Events.
const DefaultInterval = 100 * time.Millisecond

var pid = strconv.Itoa(os.Getpid())

// Signal returns the drain signal of a request's context: a channel
// closed when the drain begins. drain.Begun is one.
type Signal func(context.Context) <-chan struct{}

// WebSocket returns the /ws handler.
func WebSocket(draining Signal) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { echo(w, r, draining(r.Context())) })
}

func echo(w http.ResponseWriter, r *http.Request, draining <-chan struct{}) {
	w.Header().Set("X-Webapp-Pid", pid)
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()

	// One goroutine reads; this one echoes, so that the drain signal can
	// stop it between two messages.
	msgs := make(chan []byte)
	readDone := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(readDone)
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if typ != websocket.MessageText {
				continue
			}
			select {
			case msgs <- b:
			case <-stop:
				return
			}
		}
	}()
	write := func(b []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		defer cancel()
		return c.Write(ctx, websocket.MessageText, b)
	}
	for {
		select {
		case b := <-msgs:
			if write(b) != nil {
				return
			}
		case <-readDone:
			return // the client closed (the library answered its close frame) or went
		case <-draining:
			// Echo what has been read, then say goodbye: 1001 with the
			// close handshake. A message the client sends after this is
			// not echoed, and the client resends it on its next
			// connection.
			for {
				select {
				case b := <-msgs:
					if write(b) != nil {
						return
					}
					continue
				default:
				}
				break
			}
			c.Close(websocket.StatusGoingAway, "server draining: reconnect")
			return
		}
	}
}

// Events returns the /events handler, with an event every interval (zero
// means DefaultInterval).
func Events(draining Signal, interval time.Duration) http.Handler {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { events(w, r, draining(r.Context()), interval) })
}

func events(w http.ResponseWriter, r *http.Request, draining <-chan struct{}, interval time.Duration) {
	w.Header().Set("X-Webapp-Pid", pid)
	var last uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			http.Error(w, fmt.Sprintf("Last-Event-ID %q: want the id of an event of this stream, a whole number", v), http.StatusBadRequest)
			return
		}
		last = n
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	select {
	case <-draining:
		// Asked for while draining (on a kept-alive connection): no
		// event, status 200 (an EventSource reconnects after a stream
		// ends, but gives up on an error status), and the connection
		// goes (HTTP/1: closed after this answer; HTTP/2: GOAWAY), so
		// that the client's next request reaches the next generation.
		h.Set("Connection", "close")
		w.WriteHeader(http.StatusOK)
		return
	default:
	}
	// A browser's EventSource waits 3 s before it reconnects unless told.
	fmt.Fprintf(w, "retry: %d\n\n", interval.Milliseconds())
	if err := rc.Flush(); err != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for id := last + 1; ; id++ {
		select {
		case <-t.C:
		case <-draining:
			// The stream ends between two events: the client resumes
			// with Last-Event-ID on its next request.
			return
		case <-r.Context().Done():
			return
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %d %s\n\n", id, id, pid); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			if errors.Is(err, http.ErrNotSupported) {
				http.Error(w, "streaming not supported", http.StatusInternalServerError)
			}
			return
		}
	}
}
