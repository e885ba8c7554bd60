package baton_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton"
)

// A long-lived response ends when its generation begins to drain, after a
// whole event, so that its client resumes on the next generation: here a
// server-sent event stream whose ids count up from the client's
// Last-Event-ID. A WebSocket handler does the same with a close frame
// 1001 (going away) after echoing what it has read; see the README.
func ExampleDraining() {
	events := func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.Header.Get("Last-Event-ID"))
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-baton.Draining(r.Context()):
				return // between two events: the client reconnects with Last-Event-ID
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			id++
			fmt.Fprintf(w, "id: %d\ndata: tick\n\n", id)
			http.NewResponseController(w).Flush()
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", events)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })

	// A port of its own for the example; a service takes its socket from
	// systemd (or a fixed Address).
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{},
			baton.HTTP(baton.Socket{Name: "http", Address: addr}, &http.Server{Handler: mux}))
	}()

	var resp *http.Response
	for resp == nil { // until Run has bound the socket
		req, _ := http.NewRequest("GET", "http://"+addr+"/events", nil)
		req.Header.Set("Last-Event-ID", "41")
		var err error
		if resp, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		select {
		case err := <-done:
			fmt.Println("Run:", err)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	var ids []int
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			n, _ := strconv.Atoi(v)
			ids = append(ids, n)
			if len(ids) == 3 {
				stop() // SIGTERM, say: the drain begins
			}
		}
	}
	resp.Body.Close()
	inOrder := true
	for i, id := range ids {
		inOrder = inOrder && id == 42+i
	}
	fmt.Println("first id:", ids[0])
	fmt.Println("ids in order, the stream ended after a whole event:", inOrder && sc.Err() == nil)
	fmt.Println("stopped:", <-done)
	// Output:
	// first id: 42
	// ids in order, the stream ended after a whole event: true
	// stopped: <nil>
}
